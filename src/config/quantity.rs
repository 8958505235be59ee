//! Kubernetes resource quantities (`100m`, `64Mi`, `0.5`, `1e3`), read as the apiserver
//! reads them (`k8s.io/apimachinery/pkg/api/resource`), so that the injector's requests
//! and limits are checked before any pod carries them: a pod whose request exceeds its
//! limit is invalid, and the webhook must never make an invalid pod.

use std::cmp::Ordering;
use std::fmt;

/// A quantity: its text as written, and its value in nano-units (exact for every suffix a
/// container's cpu or memory takes; `Ei` is 2^60, times 10^9, well within `i128`).
#[derive(Debug, Clone)]
pub(crate) struct Quantity {
    text: String,
    nanos: i128,
}

impl Quantity {
    /// Reads `text`: a signed decimal number, then an optional binary suffix (`Ki` to
    /// `Ei`), decimal suffix (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) or exponent
    /// (`e3`, `E-2`). Only non-negative quantities are accepted (a container's are).
    pub(crate) fn parse(text: &str) -> Result<Quantity, String> {
        let shape = || {
            format!(
                "{text:?} is not a Kubernetes quantity (a number with an optional suffix: \
                 100m, 0.5, 64Mi, 1G)"
            )
        };
        let digits_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(digits_end);
        let number = number.strip_prefix('+').unwrap_or(number);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(shape());
        }
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
        {
            return Err(shape());
        }
        // value = mantissa × 10^exp10 × 2^exp2, in nano-units (× 10^9).
        let (exp10, exp2): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            exponent if exponent.starts_with(['e', 'E']) => {
                let value: i32 = exponent[1..].parse().map_err(|_| shape())?;
                (value, 0)
            }
            _ => return Err(shape()),
        };
        let too_large = || format!("{text:?} is too large a quantity");
        let mantissa: i128 = format!("{whole}{fraction}")
            .trim_start_matches('0')
            .parse()
            .or_else(|_| {
                if whole.chars().chain(fraction.chars()).all(|c| c == '0') {
                    Ok(0)
                } else {
                    Err(too_large())
                }
            })?;
        let fraction_digits = i32::try_from(fraction.len()).map_err(|_| shape())?;
        let exp10 = exp10 + 9 - fraction_digits;
        let scaled = if exp10 >= 0 {
            10_i128
                .checked_pow(exp10.unsigned_abs())
                .and_then(|p| mantissa.checked_mul(p))
        } else {
            // Below a nano-unit: the apiserver rounds up to the smallest unit it keeps.
            10_i128
                .checked_pow(exp10.unsigned_abs())
                .map(|p| (mantissa + p - 1) / p)
        };
        let nanos = scaled
            .and_then(|n| n.checked_mul(1_i128.checked_shl(exp2)?))
            .ok_or_else(too_large)?;
        Ok(Quantity {
            text: text.to_string(),
            nanos,
        })
    }

    /// A quantity known in the source: `text` and its value in nano-units (a test checks
    /// each such pair against [`Quantity::parse`]).
    pub(crate) fn known(text: &str, nanos: i128) -> Quantity {
        Quantity {
            text: text.to_string(),
            nanos,
        }
    }

    /// The quantity as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap()
    }

    #[test]
    fn suffixes_and_forms_compare_by_value() {
        assert_eq!(q("100m"), q("0.1"));
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("64Mi"), q("67108864"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert_eq!(q("0"), q("0m"));
        assert!(q("64M") < q("64Mi"));
        assert!(q("5m") < q("100m"));
        assert_eq!(q("1Ei").nanos, (1_i128 << 60) * 1_000_000_000);
        assert_eq!(q("64Mi").as_str(), "64Mi");
    }

    #[test]
    fn what_is_not_a_quantity_says_so() {
        for text in [
            "", "m", "64MB", "1.2.3", "-1", "ten", "1 Gi", "0x10", ".", "1e",
        ] {
            assert!(Quantity::parse(text).is_err(), "{text:?}");
        }
        assert!(Quantity::parse("99999999999999999999999999999999999Ei").is_err());
    }
}
