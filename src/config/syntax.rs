//! The syntax layer: a config document's text (YAML or JSON) read into an untyped tree.
//!
//! This module owns what the text may look like, not what it means: it refuses duplicate
//! keys (a value silently dropped is a value the operator believes is in force) and keeps
//! YAML 1.1 spellings as strings, and it says where the text is wrong. The meaning of the
//! tree is read by the walk over it ([`super::walk`] and the layers above).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::MessageFormatter as _;

/// A syntax error, with the position the parser reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    language: &'static str,
    position: Option<(u64, u64)>,
    message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "invalid {} at line {line} column {column}: {}",
                self.language, self.message
            ),
            None => write!(f, "invalid {}: {}", self.language, self.message),
        }
    }
}

/// Parses the syntax: JSON when the text starts with `{` (as `kubectl get -o json` writes
/// it), YAML otherwise. Duplicate keys are errors in both, so that no value is silently
/// dropped.
pub(super) fn read_syntax(text: &str) -> Result<Value, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        read_json(text)
    } else {
        read_yaml(text)
    }
}

fn read_json(text: &str) -> Result<Value, SyntaxError> {
    serde_json::from_str::<UniqueKeys>(text)
        .map(|UniqueKeys(value)| value)
        .map_err(|error| {
            let position = (error.line() > 0).then(|| (error.line() as u64, error.column() as u64));
            let shown = error.to_string();
            let suffix = format!(" at line {} column {}", error.line(), error.column());
            let message = shown.strip_suffix(&suffix).unwrap_or(&shown).to_string();
            SyntaxError {
                language: "JSON",
                position,
                message,
            }
        })
}

/// Reads YAML 1.2 into an untyped tree: `yes`/`on` stay strings rather than becoming
/// booleans, and `010` stays a string rather than becoming a float, so that neither is
/// silently reinterpreted. Duplicate keys are errors (serde-saphyr's default, kept explicit).
fn read_yaml(text: &str) -> Result<Value, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|error| SyntaxError {
        language: "YAML",
        position: error
            .location()
            .map(|location| (location.line(), location.column())),
        message: printable(&serde_saphyr::UserMessageFormatter.format_message(&error)),
    })
}

/// Escapes control characters: a parser message may quote the input, and a config error is
/// printed to a terminal or log.
fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// A JSON value read with duplicate keys refused: serde_json's own `Value` keeps the last of
/// two equal keys without a word.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        UniqueKeys::deserialize(deserializer).map(|UniqueKeys(value)| value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            let UniqueKeys(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{liveness_ping, single_error, single_error_starting_with};

    #[test]
    fn a_leading_zero_integer_is_not_reinterpreted() {
        let error = single_error(&liveness_ping("  timeoutSeconds: 010\n"));
        assert_eq!(
            error,
            "livenessProbe.timeoutSeconds: must be an integer (found a string)"
        );
    }

    #[test]
    fn a_yaml_syntax_error_names_line_and_column() {
        single_error_starting_with(
            "livenessProbe:\n  guestAgentPing: {}\n timeoutSeconds: 1\n",
            "invalid YAML at line 3 column ",
        );
    }

    #[test]
    fn a_json_syntax_error_names_line_and_column() {
        let error = single_error_starting_with(
            "{\n  \"livenessProbe\": {\"guestAgentPing\": {}},\n}\n",
            "invalid JSON at line 3 column 1: ",
        );
        assert!(!error.ends_with("column 1"), "{error}");
    }

    #[test]
    fn a_duplicate_key_in_yaml_is_a_syntax_error() {
        let error = single_error_starting_with(
            &liveness_ping("  timeoutSeconds: 1\n  timeoutSeconds: 2\n"),
            "invalid YAML at line 4 column 3: ",
        );
        assert!(error.contains("duplicate"), "{error}");
    }

    #[test]
    fn a_duplicate_key_in_json_is_a_syntax_error() {
        let error = single_error_starting_with(
            r#"{"livenessProbe": {"guestAgentPing": {}}, "livenessProbe": null}"#,
            "invalid JSON at line 1 column ",
        );
        assert!(error.contains("duplicate key \"livenessProbe\""), "{error}");
    }

    #[test]
    fn parser_messages_are_printed_with_control_characters_escaped() {
        assert_eq!(printable("key\u{7}\tname"), "key\\u{7}\\tname");
    }
}
