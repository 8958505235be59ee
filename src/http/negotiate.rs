//! Reading what a client asked for: the report format (`Accept`, `?verbose`) and the checks
//! to leave out (`?exclude=`). Pure functions over header and query text.

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

/// What a probe request's query string asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProbeQuery {
    /// `?verbose`: the text report.
    pub verbose: bool,
    /// `?exclude=NAME` (repeatable): checks to leave out, as written (the caller checks
    /// them against the probe's).
    pub exclude: Vec<String>,
}

/// Which query parameters a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryRule {
    /// `/ready` and `/live`: `verbose` and `exclude`.
    WholeProbe,
    /// `/ready/<name>`, `/live/<name>`, `/started`: `verbose` only.
    VerboseOnly,
}

/// Reads the query string of a probe request: `verbose` as a flag (`?verbose`) or with
/// `true`/`false`/`1`/`0`, and where `rule` allows it `exclude=NAME`, repeatable. Anything
/// else is a client error, named.
pub(crate) fn probe_query(query: &str, rule: QueryRule) -> Result<ProbeQuery, String> {
    let mut read = ProbeQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (pair, None),
        };
        match (key, rule) {
            ("verbose", _) => {
                read.verbose = match value {
                    None | Some("") | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(other) => {
                        return Err(format!(
                            "query parameter verbose: {other:?} is not one of true, false, 1, 0 (or no value)"
                        ));
                    }
                };
            }
            ("exclude", QueryRule::WholeProbe) => match value.map(percent_decoded) {
                Some(Some(name)) if !name.is_empty() => read.exclude.push(name),
                _ => {
                    return Err(
                        "query parameter exclude: give the name of a check, exclude=NAME".into(),
                    );
                }
            },
            ("exclude", QueryRule::VerboseOnly) => {
                return Err(
                    "query parameter exclude applies to /ready and /live, which run several \
                     checks; this route answers for one"
                        .into(),
                );
            }
            (key, QueryRule::WholeProbe) => {
                return Err(format!(
                    "unknown query parameter {key:?}: the parameters are verbose and exclude"
                ));
            }
            (key, QueryRule::VerboseOnly) => {
                return Err(format!(
                    "unknown query parameter {key:?}: the only parameter is verbose"
                ));
            }
        }
    }
    Ok(read)
}

/// `text` with its `%XX` escapes decoded (and `+` as a space, as forms write it); `None` if
/// an escape is malformed or the result is not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                decoded.push(b' ');
                i += 1;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
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
        let verbose = |query| probe_query(query, QueryRule::WholeProbe).map(|q| q.verbose);
        assert_eq!(verbose(""), Ok(false));
        assert_eq!(verbose("verbose"), Ok(true));
        assert_eq!(verbose("verbose=1"), Ok(true));
        assert_eq!(verbose("verbose=false"), Ok(false));
    }

    #[test]
    fn exclude_repeats_is_decoded_and_only_whole_probe_routes_take_it() {
        let query = probe_query(
            "exclude=app&verbose&exclude=disk%2D2",
            QueryRule::WholeProbe,
        );
        assert_eq!(
            query,
            Ok(ProbeQuery {
                verbose: true,
                exclude: vec!["app".into(), "disk-2".into()],
            })
        );
        for bad in ["exclude", "exclude=", "exclude=%zz"] {
            let error = probe_query(bad, QueryRule::WholeProbe).unwrap_err();
            assert!(
                error.starts_with("query parameter exclude: give the name"),
                "{bad}: {error}"
            );
        }
        let error = probe_query("exclude=app", QueryRule::VerboseOnly).unwrap_err();
        assert!(error.contains("applies to /ready and /live"), "{error}");
    }

    #[test]
    fn unknown_parameters_and_values_are_named_in_the_error() {
        let whole = |query| probe_query(query, QueryRule::WholeProbe);
        assert!(whole("verbose=maybe").unwrap_err().contains("\"maybe\""));
        assert!(whole("cmd=rm").unwrap_err().contains("\"cmd\""));
        let error = probe_query("cmd=rm", QueryRule::VerboseOnly).unwrap_err();
        assert!(error.contains("\"cmd\"") && error.contains("only parameter is verbose"));
    }
}
