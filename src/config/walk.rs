//! The walk over an untyped document tree, and the errors it collects.
//!
//! The walk is by hand rather than serde-derived because a derived `deny_unknown_fields`
//! deserializer stops at the first problem; here every problem is collected with its
//! [`FieldPath`] so that an operator fixes a file in one round. This module owns the field
//! paths, the error list, the rules every field shares (a null field is not set, unknown
//! fields are named with what is expected) and the readers of scalar values. What a field
//! means is the business of the layers above: [`super::probe_fields`], [`super::document`],
//! [`super::manifest`].

use std::fmt;

use serde_json::{Map, Value};

use super::{ConfigError, ConfigErrors, GatewayFile};

/// A field path as shown in errors: dotted names, `[i]` for list items, and `["key"]` for
/// keys that are not plain names (annotation keys hold dots and slashes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldPath(String);

impl FieldPath {
    /// The document itself: errors about it have an empty path.
    pub(super) fn root() -> Self {
        FieldPath(String::new())
    }

    pub(super) fn field(&self, name: &str) -> Self {
        let plain = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            FieldPath(format!("{}[{name:?}]", self.0))
        } else if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    pub(super) fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The problems found so far in a document.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn add(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `read`, or `None` with its error recorded at `path`.
    pub(super) fn keep<T>(&mut self, path: &FieldPath, read: Result<T, String>) -> Option<T> {
        read.map_err(|message| self.add(path, message)).ok()
    }

    /// The file when nothing was wrong. Every reader that gives up records why, so a
    /// missing file without errors would be a bug here; it is still reported, not hidden.
    pub(super) fn finish(self, file: Option<GatewayFile>) -> Result<GatewayFile, ConfigErrors> {
        self.finish_with(file)
    }

    /// [`Errors::finish`] for any document read.
    pub(super) fn finish_with<T>(mut self, read: Option<T>) -> Result<T, ConfigErrors> {
        match read {
            Some(read) if self.0.is_empty() => Ok(read),
            None if self.0.is_empty() => {
                self.add(&FieldPath::root(), "the document could not be read");
                Err(ConfigErrors(self.0))
            }
            _ => Err(ConfigErrors(self.0)),
        }
    }
}

/// Reads a boolean. YAML 1.1 spellings such as `yes` are strings here (YAML 1.2), so they
/// get a hint rather than a silent reinterpretation.
pub(super) fn read_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::String(text) if is_yaml11_bool(text) => Err(format!(
            "must be true or false (found the string {text:?}; YAML 1.2 booleans are true and false)"
        )),
        other => Err(format!("must be true or false (found {})", describe(other))),
    }
}

fn is_yaml11_bool(text: &str) -> bool {
    ["yes", "no", "on", "off", "y", "n"]
        .iter()
        .any(|word| text.eq_ignore_ascii_case(word))
}

/// A string value; a number or boolean where a string belongs gets the quoting hint, since
/// that is the usual cause (`command: [sleep, 5]`).
pub(super) fn string(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(_) | Value::Bool(_) => Err(format!(
            "must be a string (found {}; quote it: \"{value}\")",
            describe(value)
        )),
        other => Err(format!("must be a string (found {})", describe(other))),
    }
}

/// An integer value: a JSON integer, not a float or a string holding digits.
pub(super) fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(n), _) => Ok(n),
            (None, Some(n)) => Err(format!("is too large (found {n})")),
            (None, None) => Err(format!("must be an integer (found a float, {number})")),
        },
        other => Err(format!("must be an integer (found {})", describe(other))),
    }
}

pub(super) fn in_range(n: i64, minimum: i64, maximum: i64) -> Result<i64, String> {
    if n < minimum {
        Err(at_least(minimum))
    } else if n > maximum {
        Err(format!("must be at most {maximum}"))
    } else {
        Ok(n)
    }
}

pub(super) fn at_least(minimum: impl fmt::Display) -> String {
    format!("must be at least {minimum}")
}

/// Reads an optional field with `read`, recording its error at the field's path.
pub(super) fn read_field<T>(
    map: &Map<String, Value>,
    path: &FieldPath,
    name: &str,
    errors: &mut Errors,
    read: impl FnOnce(&Value) -> Result<T, String>,
) -> Option<T> {
    let value = set_value(map, name)?;
    errors.keep(&path.field(name), read(value))
}

/// The value of `name`, unless it is absent or null: as in Kubernetes, a null field is
/// not set.
pub(super) fn set_value<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|value| !value.is_null())
}

/// The mapping in `value`, or an error naming what was found instead.
pub(super) fn expect_mapping<'a>(
    value: &'a Value,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            errors.add(
                path,
                format!("must be a mapping (found {})", describe(other)),
            );
            None
        }
    }
}

/// The keys of `map` that are not in `known`.
pub(super) fn unknown_fields<'a>(
    map: &'a Map<String, Value>,
    known: &'a [&str],
) -> impl Iterator<Item = &'a str> {
    map.keys()
        .map(String::as_str)
        .filter(move |key| !known.contains(key))
}

/// The error for an unknown field: what is accepted, and the likely intended field when
/// only the letter case differs (`readinessprobe`).
pub(super) fn unknown_field_message(key: &str, known: &[&str]) -> String {
    let expected = match known {
        [only] => format!("expected {only}"),
        _ => format!("expected one of {}", known.join(", ")),
    };
    match known.iter().find(|name| name.eq_ignore_ascii_case(key)) {
        Some(name) => format!("unknown field (did you mean {name}?); {expected}"),
        None => format!("unknown field; {expected}"),
    }
}

/// What kind of value was found, for "must be X (found Y)" errors.
pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The mapping a document must be. `expected` says what the document should hold.
pub(super) fn document_mapping<'a>(
    value: &'a Value,
    path: &FieldPath,
    expected: &str,
    errors: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        Value::Null => {
            errors.add(path, format!("the document is empty; expected {expected}"));
            None
        }
        other => {
            errors.add(
                path,
                format!(
                    "the document must be a mapping (found {}); expected {expected}",
                    describe(other)
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{
        liveness_ping, probe_of, single_error, single_error_starting_with,
    };
    use crate::config::{Handler, ProbeKind, parse_document};

    #[test]
    fn a_field_in_the_wrong_case_gets_a_suggestion() {
        single_error_starting_with(
            "readinessprobe:\n  guestAgentPing: {}\nlivenessProbe:\n  guestAgentPing: {}\n",
            "readinessprobe: unknown field (did you mean readinessProbe?)",
        );
    }

    #[test]
    fn a_string_instead_of_an_integer_says_what_was_found() {
        let error =
            single_error("readinessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: \"5\"\n");
        assert_eq!(
            error,
            "readinessProbe.timeoutSeconds: must be an integer (found a string)"
        );
    }

    #[test]
    fn a_float_is_not_an_integer() {
        let error = single_error(&liveness_ping("  periodSeconds: 2.5\n"));
        assert_eq!(
            error,
            "livenessProbe.periodSeconds: must be an integer (found a float, 2.5)"
        );
    }

    #[test]
    fn a_null_field_counts_as_not_set() {
        let file = parse_document(
            "listen:\nreadinessProbe:\nlivenessProbe:\n  guestAgentPing: {}\n  exec:\n  timeoutSeconds: ~\n",
        )
        .unwrap();
        assert_eq!(file.listen, None);
        assert_eq!(file.readiness, None);
        assert_eq!(
            file.liveness,
            Some(probe_of(ProbeKind::Liveness, Handler::GuestAgentPing, 1))
        );
    }

    #[test]
    fn yaml_1_1_booleans_are_strings_with_a_hint() {
        let error = single_error(&liveness_ping("exposeOutput: yes\n"));
        assert_eq!(
            error,
            "exposeOutput: must be true or false (found the string \"yes\"; YAML 1.2 booleans are true and false)"
        );
        let file =
            parse_document("readinessProbe:\n  exec:\n    command: [echo, on, no]\n").unwrap();
        let Some(Handler::Exec(command)) =
            file.readiness.map(|spec| spec.checks[0].handler.clone())
        else {
            panic!("expected an exec handler");
        };
        assert_eq!(command.args, ["on", "no"]);
    }

    #[test]
    fn an_empty_document_is_one_clear_error() {
        for empty in ["", "# nothing here\n", "null\n"] {
            single_error_starting_with(empty, "the document is empty; expected a gateway config");
        }
    }

    #[test]
    fn a_document_that_is_not_a_mapping_says_what_it_is() {
        single_error_starting_with(
            "- readinessProbe: {}\n",
            "the document must be a mapping (found a list)",
        );
        single_error_starting_with("hello\n", "the document must be a mapping (found a string)");
    }

    #[test]
    fn field_paths_quote_keys_that_are_not_plain_names() {
        let path = FieldPath::root().field("metadata").field("annotations");
        assert_eq!(
            path.field("probe-gateway.kubevirt.io/probes")
                .index(0)
                .to_string(),
            "metadata.annotations[\"probe-gateway.kubevirt.io/probes\"][0]"
        );
    }
}
