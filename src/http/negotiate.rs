//! Reading what a client asked for: the report format (`Accept`, `?verbose`). Pure
//! functions over header and query text.

/// The form of a probe response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `ok` or the one-line reason: what kubelet and scripts read.
    Plain,
    /// The human-readable report (`?verbose`).
    Verbose,
    /// The JSON report (`Accept: application/json`).
    Json,
}

/// True when the client prefers JSON: `application/json` is listed with a weight above
/// zero and not below any listed `text/plain`. `*/*` (kubelet, curl) means text.
pub(crate) fn wants_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let mut json = None::<f32>;
    let mut text = None::<f32>;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" => json = Some(json.map_or(weight, |w| w.max(weight))),
            "text/plain" => text = Some(text.map_or(weight, |w| w.max(weight))),
            _ => {}
        }
    }
    match (json, text) {
        (Some(j), Some(t)) => j > 0.0 && j >= t,
        (Some(j), None) => j > 0.0,
        _ => false,
    }
}

/// Reads the query string of a probe request: only `verbose` is known, as a flag
/// (`?verbose`) or with `true`/`false`/`1`/`0`. Anything else is a client error, named.
pub(crate) fn verbose_flag(query: &str) -> Result<bool, String> {
    let mut verbose = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (pair, None),
        };
        if key != "verbose" {
            return Err(format!(
                "unknown query parameter {key:?}: the only parameter is verbose"
            ));
        }
        verbose = match value {
            None | Some("") | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(format!(
                    "query parameter verbose: {other:?} is not one of true, false, 1, 0 (or no value)"
                ));
            }
        };
    }
    Ok(verbose)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_and_curl_get_text() {
        assert!(!wants_json(Some("*/*")));
        assert!(!wants_json(None));
        assert!(!wants_json(Some("text/plain")));
    }

    #[test]
    fn json_when_asked_for_and_preferred() {
        assert!(wants_json(Some("application/json")));
        assert!(wants_json(Some("text/plain;q=0.5, application/json")));
        assert!(wants_json(Some("Application/JSON; charset=utf-8")));
        assert!(!wants_json(Some("application/json;q=0.2, text/plain")));
        assert!(!wants_json(Some("application/json;q=0")));
    }

    #[test]
    fn verbose_is_a_flag_or_a_boolean() {
        assert_eq!(verbose_flag(""), Ok(false));
        assert_eq!(verbose_flag("verbose"), Ok(true));
        assert_eq!(verbose_flag("verbose=1"), Ok(true));
        assert_eq!(verbose_flag("verbose=false"), Ok(false));
    }

    #[test]
    fn unknown_parameters_and_values_are_named_in_the_error() {
        assert!(
            verbose_flag("verbose=maybe")
                .unwrap_err()
                .contains("\"maybe\"")
        );
        assert!(verbose_flag("cmd=rm").unwrap_err().contains("\"cmd\""));
    }
}
