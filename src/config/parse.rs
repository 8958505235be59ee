//! Reading a config document: syntax (YAML or JSON) into an untyped tree, then a walk over
//! that tree by hand.
//!
//! The walk is manual rather than serde-derived because a derived `deny_unknown_fields`
//! deserializer stops at the first problem; here every problem is collected with its field
//! path so that an operator fixes a file in one round. The rules for a probe are shared by
//! the gateway config, the manifest annotation and a manifest's own probes (see
//! [`super::manifest`]), so that the same mistake reads the same wherever it is made.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::MessageFormatter as _;

use super::manifest::{self, DocumentKind};
use super::{
    ConfigError, ConfigErrors, ConfigSource, ExecCommand, GatewayFile, Handler,
    MAX_OUTPUT_EXCERPT_BYTES, Mode, ProbeKind, ProbeSpec,
};
use crate::agent::AgentAddress;

/// What a whole config document may be, named in the error about a document of the wrong
/// shape.
const DOCUMENT_EXPECTED: &str = "a gateway config with readinessProbe and/or livenessProbe, \
     or a KubeVirt VirtualMachine or VirtualMachineInstance manifest";

/// The fields of a gateway config document.
const GATEWAY_FIELDS: &[&str] = &[
    "listen",
    "agent",
    "mode",
    "minIntervalSeconds",
    "livenessGraceSeconds",
    "exposeOutput",
    "outputExcerptBytes",
    "readinessProbe",
    "livenessProbe",
];

/// The fields a gateway config shares with the manifest annotation: the checks and how they
/// are reported, but not where the gateway listens or reaches the agent.
pub(super) const CHECKS_FIELDS: &[&str] = &[
    "mode",
    "minIntervalSeconds",
    "livenessGraceSeconds",
    "exposeOutput",
    "outputExcerptBytes",
    "readinessProbe",
    "livenessProbe",
];

/// The fields of KubeVirt's VMI Probe.
const PROBE_FIELDS: &[&str] = &[
    "exec",
    "guestAgentPing",
    "httpGet",
    "tcpSocket",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
];

/// Every handler KubeVirt knows, so that a count of "handlers set" matches what the operator
/// wrote even when some of them are ones the gateway refuses.
const PROBE_HANDLERS: &[&str] = &["exec", "guestAgentPing", "httpGet", "tcpSocket"];

/// The handlers the gateway runs; the others are kubelet's.
const GATEWAY_HANDLERS: &str = "exec, guestAgentPing";

/// The hint given wherever `guestAgentPing` is written with no value: YAML reads
/// `guestAgentPing:` as null, which Kubernetes treats as not set.
const GUEST_AGENT_PING_HINT: &str = "write guestAgentPing: {}";

/// Parses and validates a config document: a gateway config, or a KubeVirt VirtualMachine or
/// VirtualMachineInstance manifest, in YAML or JSON. Returns every problem found, each with
/// its field path.
pub fn parse_document(text: &str) -> Result<GatewayFile, ConfigErrors> {
    let mut errors = Errors::default();
    let root = FieldPath::root();
    let file = match read_syntax(text) {
        Ok(value) => document_mapping(value, &root, DOCUMENT_EXPECTED, &mut errors)
            .and_then(|map| read_document(&map, &mut errors)),
        Err(error) => {
            errors.add(&root, error.to_string());
            None
        }
    };
    errors.finish(file)
}

/// Dispatches on what the document is: the manifest kinds are recognised by `kind`.
fn read_document(map: &Map<String, Value>, errors: &mut Errors) -> Option<GatewayFile> {
    match manifest::document_kind(map, errors) {
        DocumentKind::GatewayConfig => Some(read_gateway_config(map, errors)),
        DocumentKind::Manifest(kind) => manifest::read_manifest(kind, map, errors),
        DocumentKind::Unsupported => None,
    }
}

/// Reads a gateway config document: its own settings plus the checks.
fn read_gateway_config(map: &Map<String, Value>, errors: &mut Errors) -> GatewayFile {
    let root = FieldPath::root();
    for key in unknown_fields(map, GATEWAY_FIELDS) {
        errors.add(&root.field(key), unknown_field_message(key, GATEWAY_FIELDS));
    }
    let listen = read_field(map, &root, "listen", errors, read_listen);
    let agent = read_field(map, &root, "agent", errors, read_agent);
    read_checks(map, &root, errors).into_file(ConfigSource::GatewayConfig, listen, agent)
}

/// The checks and their reporting settings, as read from a gateway config or the manifest
/// annotation. Unset fields stay `None` so that defaults are applied in one place
/// ([`super::Settings`]).
#[derive(Debug, Default)]
pub(super) struct Checks {
    pub(super) mode: Option<Mode>,
    pub(super) min_interval: Option<Duration>,
    pub(super) liveness_grace: Option<Duration>,
    pub(super) expose_output: Option<bool>,
    pub(super) output_excerpt_bytes: Option<usize>,
    pub(super) readiness: Option<ProbeSpec>,
    pub(super) liveness: Option<ProbeSpec>,
}

impl Checks {
    pub(super) fn into_file(
        self,
        source: ConfigSource,
        listen: Option<SocketAddr>,
        agent: Option<AgentAddress>,
    ) -> GatewayFile {
        GatewayFile {
            source,
            listen,
            agent,
            mode: self.mode,
            min_interval: self.min_interval,
            liveness_grace: self.liveness_grace,
            expose_output: self.expose_output,
            output_excerpt_bytes: self.output_excerpt_bytes,
            readiness: self.readiness,
            liveness: self.liveness,
        }
    }
}

/// Reads [`CHECKS_FIELDS`] from `map` (the caller reports unknown fields, which differ
/// between a gateway config and the annotation). At least one probe must be written; an
/// invalid one has its own errors, so "no probe configured" is only said when none is.
pub(super) fn read_checks(
    map: &Map<String, Value>,
    path: &FieldPath,
    errors: &mut Errors,
) -> Checks {
    if set_value(map, ProbeKind::Readiness.field()).is_none()
        && set_value(map, ProbeKind::Liveness.field()).is_none()
    {
        errors.add(
            path,
            "no probe configured: set readinessProbe and/or livenessProbe",
        );
    }
    let mode = read_field(map, path, "mode", errors, read_mode);
    let min_interval = read_field(map, path, "minIntervalSeconds", errors, read_grace);
    if mode == Some(Mode::Background) && min_interval.is_some_and(|d| !d.is_zero()) {
        errors.add(
            &path.field("minIntervalSeconds"),
            "applies to mode: onDemand only; in background mode every answer is the loop's \
             latest result",
        );
    }
    Checks {
        mode,
        min_interval,
        liveness_grace: read_field(map, path, "livenessGraceSeconds", errors, read_grace),
        expose_output: read_field(map, path, "exposeOutput", errors, read_bool),
        output_excerpt_bytes: read_field(map, path, "outputExcerptBytes", errors, read_excerpt),
        readiness: read_probe_field(map, path, ProbeKind::Readiness, errors),
        liveness: read_probe_field(map, path, ProbeKind::Liveness, errors),
    }
}

/// Reads the probe of `kind` from its field in `map`, if set.
pub(super) fn read_probe_field(
    map: &Map<String, Value>,
    path: &FieldPath,
    kind: ProbeKind,
    errors: &mut Errors,
) -> Option<ProbeSpec> {
    let value = set_value(map, kind.field())?;
    read_probe(value, &path.field(kind.field()), kind, errors)
}

/// Reads one probe in KubeVirt's VMI Probe shape, with Kubernetes' defaults and minimums.
fn read_probe(
    value: &Value,
    path: &FieldPath,
    kind: ProbeKind,
    errors: &mut Errors,
) -> Option<ProbeSpec> {
    let map = expect_mapping(value, path, errors)?;
    for key in unknown_fields(map, PROBE_FIELDS) {
        errors.add(&path.field(key), unknown_field_message(key, PROBE_FIELDS));
    }
    let handler = read_handler(map, path, errors);
    let timeout = read_probe_integer(map, path, &TIMEOUT_SECONDS, errors);
    let initial_delay = read_probe_integer(map, path, &INITIAL_DELAY_SECONDS, errors);
    let period = read_probe_integer(map, path, &PERIOD_SECONDS, errors);
    let success = read_probe_integer(map, path, &SUCCESS_THRESHOLD, errors);
    let failure = read_probe_integer(map, path, &FAILURE_THRESHOLD, errors);
    if kind == ProbeKind::Liveness && success.is_some_and(|n| n != 1) {
        errors.add(
            &path.field(SUCCESS_THRESHOLD.name),
            "must be 1 for livenessProbe",
        );
        return None;
    }
    Some(ProbeSpec {
        handler: handler?,
        timeout: Duration::from_secs(u64::from(timeout?)),
        initial_delay_seconds: initial_delay?,
        period_seconds: period?,
        success_threshold: success?,
        failure_threshold: failure?,
    })
}

/// An integer field of a probe: its Kubernetes default and minimum.
struct ProbeInteger {
    name: &'static str,
    default: u32,
    minimum: u32,
}

const TIMEOUT_SECONDS: ProbeInteger = ProbeInteger {
    name: "timeoutSeconds",
    default: 1,
    minimum: 1,
};
const INITIAL_DELAY_SECONDS: ProbeInteger = ProbeInteger {
    name: "initialDelaySeconds",
    default: 0,
    minimum: 0,
};
const PERIOD_SECONDS: ProbeInteger = ProbeInteger {
    name: "periodSeconds",
    default: 10,
    minimum: 1,
};
const SUCCESS_THRESHOLD: ProbeInteger = ProbeInteger {
    name: "successThreshold",
    default: 1,
    minimum: 1,
};
const FAILURE_THRESHOLD: ProbeInteger = ProbeInteger {
    name: "failureThreshold",
    default: 3,
    minimum: 1,
};

/// Reads a probe integer: the default when unset, `None` (with an error) when invalid.
/// Kubernetes declares these `int32`, so larger values are refused as they would be there.
fn read_probe_integer(
    map: &Map<String, Value>,
    path: &FieldPath,
    field: &ProbeInteger,
    errors: &mut Errors,
) -> Option<u32> {
    let Some(value) = set_value(map, field.name) else {
        return Some(field.default);
    };
    let read = integer(value)
        .and_then(|n| in_range(n, i64::from(field.minimum), i64::from(i32::MAX)))
        .and_then(|n| u32::try_from(n).map_err(|_| at_least(field.minimum)));
    errors.keep(&path.field(field.name), read)
}

/// Reads the probe's one handler. Every present handler is still checked, so that a probe
/// with two handlers also reports what is wrong inside each.
fn read_handler(
    map: &Map<String, Value>,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<Handler> {
    let exec =
        set_value(map, "exec").and_then(|value| read_exec(value, &path.field("exec"), errors));
    let ping = set_value(map, "guestAgentPing")
        .and_then(|value| read_guest_agent_ping(value, &path.field("guestAgentPing"), errors));
    let present: Vec<&str> = PROBE_HANDLERS
        .iter()
        .copied()
        .filter(|name| set_value(map, name).is_some())
        .collect();
    match present.as_slice() {
        ["exec"] => exec.map(Handler::Exec),
        ["guestAgentPing"] => ping,
        [refused] => {
            errors.add(&path.field(refused), kubelet_handler_message(refused));
            None
        }
        _ => {
            errors.add(path, handler_count_message(map, present.len()));
            None
        }
    }
}

fn handler_count_message(map: &Map<String, Value>, found: usize) -> String {
    let message = format!("exactly one of {GATEWAY_HANDLERS} must be set (found {found})");
    if found == 0 && map.get("guestAgentPing").is_some_and(Value::is_null) {
        format!("{message}; guestAgentPing has no value: {GUEST_AGENT_PING_HINT}")
    } else {
        message
    }
}

fn kubelet_handler_message(handler: &str) -> String {
    format!(
        "the gateway runs only exec and guestAgentPing checks; kubelet can probe {handler} \
         directly, so keep that probe on the VMI"
    )
}

/// Reads `exec: {command: [...]}`.
fn read_exec(value: &Value, path: &FieldPath, errors: &mut Errors) -> Option<ExecCommand> {
    let map = expect_mapping(value, path, errors)?;
    for key in unknown_fields(map, &["command"]) {
        errors.add(&path.field(key), unknown_field_message(key, &["command"]));
    }
    let command_path = path.field("command");
    let Some(command) = set_value(map, "command") else {
        errors.add(
            &command_path,
            "must be set: a list of the program and its arguments",
        );
        return None;
    };
    read_command(command, &command_path, errors)
}

/// Reads the command as separate words: they go to the guest as an argument vector, never
/// through a shell, so each must be a string the guest can pass to a program.
fn read_command(value: &Value, path: &FieldPath, errors: &mut Errors) -> Option<ExecCommand> {
    let Value::Array(items) = value else {
        errors.add(
            path,
            format!(
                "must be a list of the program and its arguments, e.g. [\"cat\", \"/tmp/healthy.txt\"] (found {})",
                describe(value)
            ),
        );
        return None;
    };
    if items.is_empty() {
        errors.add(
            path,
            "must not be empty: give the program and its arguments",
        );
        return None;
    }
    let words: Vec<Option<String>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| errors.keep(&path.index(index), command_word(item, index)))
        .collect();
    let mut words = words
        .into_iter()
        .collect::<Option<Vec<String>>>()?
        .into_iter();
    let program = words.next()?;
    Some(ExecCommand {
        path: program,
        args: words.collect(),
    })
}

fn command_word(value: &Value, index: usize) -> Result<String, String> {
    let word = string(value)?;
    if index == 0 && word.is_empty() {
        return Err("must not be empty: it names the program to run".to_string());
    }
    if word.contains('\0') {
        return Err("must not contain a NUL character".to_string());
    }
    Ok(word.to_string())
}

/// Reads `guestAgentPing: {}`: KubeVirt's handler has no fields.
fn read_guest_agent_ping(value: &Value, path: &FieldPath, errors: &mut Errors) -> Option<Handler> {
    let Value::Object(map) = value else {
        errors.add(
            path,
            format!("must be an empty mapping {{}} (found {})", describe(value)),
        );
        return None;
    };
    for key in map.keys() {
        errors.add(
            &path.field(key),
            format!("unknown field; guestAgentPing has no fields ({GUEST_AGENT_PING_HINT})"),
        );
    }
    map.is_empty().then_some(Handler::GuestAgentPing)
}

fn read_listen(value: &Value) -> Result<SocketAddr, String> {
    let expected = "an IP address and port such as [::]:8080 or 0.0.0.0:8080";
    let text = match value {
        Value::String(text) => text,
        other => return Err(format!("must be {expected} (found {})", describe(other))),
    };
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a socket address; expected {expected}"))
}

fn read_agent(value: &Value) -> Result<AgentAddress, String> {
    AgentAddress::parse(string(value)?)
}

/// `livenessGraceSeconds`: 0 turns the grace off.
fn read_grace(value: &Value) -> Result<Duration, String> {
    let seconds = integer(value).and_then(|n| in_range(n, 0, i64::MAX))?;
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| at_least(0))
}

fn read_mode(value: &Value) -> Result<Mode, String> {
    match value.as_str() {
        Some("onDemand") => Ok(Mode::OnDemand),
        Some("background") => Ok(Mode::Background),
        _ => Err(format!(
            "must be onDemand or background (found {})",
            match value {
                Value::String(text) => format!("{text:?}"),
                other => describe(other).to_string(),
            }
        )),
    }
}

fn read_excerpt(value: &Value) -> Result<usize, String> {
    let max = i64::try_from(MAX_OUTPUT_EXCERPT_BYTES).unwrap_or(i64::MAX);
    let bytes = integer(value).and_then(|n| in_range(n, 0, max))?;
    usize::try_from(bytes).map_err(|_| at_least(0))
}

/// Reads a boolean. YAML 1.1 spellings such as `yes` are strings here (YAML 1.2), so they
/// get a hint rather than a silent reinterpretation.
fn read_bool(value: &Value) -> Result<bool, String> {
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
fn string(value: &Value) -> Result<&str, String> {
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
fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(n), _) => Ok(n),
            (None, Some(n)) => Err(format!("is too large (found {n})")),
            (None, None) => Err(format!("must be an integer (found a float, {number})")),
        },
        other => Err(format!("must be an integer (found {})", describe(other))),
    }
}

fn in_range(n: i64, minimum: i64, maximum: i64) -> Result<i64, String> {
    if n < minimum {
        Err(at_least(minimum))
    } else if n > maximum {
        Err(format!("must be at most {maximum}"))
    } else {
        Ok(n)
    }
}

fn at_least(minimum: impl fmt::Display) -> String {
    format!("must be at least {minimum}")
}

/// Reads an optional field with `read`, recording its error at the field's path.
fn read_field<T>(
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
pub(super) fn document_mapping(
    value: Value,
    path: &FieldPath,
    expected: &str,
    errors: &mut Errors,
) -> Option<Map<String, Value>> {
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
                    describe(&other)
                ),
            );
            None
        }
    }
}

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
    pub(super) fn finish(mut self, file: Option<GatewayFile>) -> Result<GatewayFile, ConfigErrors> {
        match file {
            Some(file) if self.0.is_empty() => Ok(file),
            None if self.0.is_empty() => {
                self.add(&FieldPath::root(), "the document could not be read");
                Err(ConfigErrors(self.0))
            }
            _ => Err(ConfigErrors(self.0)),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::*;

    const SEED: &str = r#"
listen: "[::]:8080"
agent: "unix:///run/probe-gateway/agent.sock"
livenessGraceSeconds: 600
exposeOutput: false
outputExcerptBytes: 1024
readinessProbe:
  exec:
    command: ["cat", "/tmp/healthy.txt"]
  timeoutSeconds: 5
livenessProbe:
  guestAgentPing: {}
  timeoutSeconds: 1
"#;

    /// The rendered errors of a document that must be invalid, one line each.
    pub(in crate::config) fn errors_of(text: &str) -> Vec<String> {
        match parse_document(text) {
            Ok(file) => panic!("expected errors, got {file:?}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    /// The one error of a document that must have exactly one.
    pub(in crate::config) fn single_error(text: &str) -> String {
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors[0].clone()
    }

    fn probe(handler: Handler, timeout_seconds: u64) -> ProbeSpec {
        ProbeSpec {
            handler,
            timeout: Duration::from_secs(timeout_seconds),
            initial_delay_seconds: 0,
            period_seconds: 10,
            success_threshold: 1,
            failure_threshold: 3,
        }
    }

    fn liveness_ping(extra: &str) -> String {
        format!("livenessProbe:\n  guestAgentPing: {{}}\n{extra}")
    }

    #[test]
    fn the_seed_example_parses_to_the_expected_gateway_file() {
        let expected = GatewayFile {
            source: ConfigSource::GatewayConfig,
            listen: Some(SocketAddr::from(([0u16; 8], 8080))),
            agent: Some(AgentAddress::Unix(PathBuf::from(
                "/run/probe-gateway/agent.sock",
            ))),
            mode: None,
            min_interval: None,
            liveness_grace: Some(Duration::from_secs(600)),
            expose_output: Some(false),
            output_excerpt_bytes: Some(1024),
            readiness: Some(probe(
                Handler::Exec(ExecCommand {
                    path: "cat".into(),
                    args: vec!["/tmp/healthy.txt".into()],
                }),
                5,
            )),
            liveness: Some(probe(Handler::GuestAgentPing, 1)),
        };
        assert_eq!(parse_document(SEED), Ok(expected));
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let example = include_str!("../../examples/gateway.yaml");
        assert_eq!(parse_document(example), parse_document(SEED));
    }

    #[test]
    fn json_is_accepted_with_the_same_meaning_as_yaml() {
        let json = r#"{
            "listen": "[::]:8080",
            "agent": "unix:///run/probe-gateway/agent.sock",
            "livenessGraceSeconds": 600,
            "exposeOutput": false,
            "outputExcerptBytes": 1024,
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/healthy.txt"]}, "timeoutSeconds": 5},
            "livenessProbe": {"guestAgentPing": {}, "timeoutSeconds": 1}
        }"#;
        assert_eq!(parse_document(json), parse_document(SEED));
    }

    #[test]
    fn unset_fields_stay_unset_and_probe_fields_take_kubernetes_defaults() {
        let file = parse_document("readinessProbe:\n  guestAgentPing: {}\n").unwrap();
        assert_eq!(file.listen, None);
        assert_eq!(file.agent, None);
        assert_eq!(file.liveness_grace, None);
        assert_eq!(file.expose_output, None);
        assert_eq!(file.output_excerpt_bytes, None);
        assert_eq!(file.liveness, None);
        assert_eq!(file.readiness, Some(probe(Handler::GuestAgentPing, 1)));
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_field_path() {
        let errors = errors_of(
            "listen: nowhere\nreadinessProbe:\n  exec:\n    command: [cat, 5]\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 0\n",
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("listen: \"nowhere\" is not a socket address"));
        assert!(errors[1].starts_with("readinessProbe.exec.command[1]: must be a string"));
        assert_eq!(
            errors[2],
            "livenessProbe.timeoutSeconds: must be at least 1"
        );
    }

    #[test]
    fn two_handlers_are_rejected_with_the_count() {
        let error = single_error(
            "readinessProbe:\n  exec:\n    command: [\"true\"]\n  guestAgentPing: {}\n",
        );
        assert_eq!(
            error,
            "readinessProbe: exactly one of exec, guestAgentPing must be set (found 2)"
        );
    }

    #[test]
    fn a_probe_without_a_handler_is_rejected_with_the_count() {
        let error = single_error("readinessProbe:\n  timeoutSeconds: 5\n");
        assert_eq!(
            error,
            "readinessProbe: exactly one of exec, guestAgentPing must be set (found 0)"
        );
    }

    #[test]
    fn a_guest_agent_ping_without_a_value_gets_the_hint_to_write_braces() {
        let error = single_error("livenessProbe:\n  guestAgentPing:\n");
        assert!(
            error.starts_with("livenessProbe: exactly one of"),
            "{error}"
        );
        assert!(error.contains("(found 0)"), "{error}");
        assert!(error.contains("write guestAgentPing: {}"), "{error}");
    }

    #[test]
    fn a_zero_timeout_is_rejected() {
        let error = single_error(&liveness_ping("  timeoutSeconds: 0\n"));
        assert_eq!(error, "livenessProbe.timeoutSeconds: must be at least 1");
    }

    #[test]
    fn a_liveness_success_threshold_other_than_1_is_rejected() {
        let error = single_error(&liveness_ping("  successThreshold: 2\n"));
        assert_eq!(
            error,
            "livenessProbe.successThreshold: must be 1 for livenessProbe"
        );
    }

    #[test]
    fn a_readiness_success_threshold_above_1_is_accepted() {
        let file = parse_document("readinessProbe:\n  guestAgentPing: {}\n  successThreshold: 2\n")
            .unwrap();
        assert_eq!(file.readiness.map(|spec| spec.success_threshold), Some(2));
    }

    #[test]
    fn each_probe_integer_has_its_kubernetes_minimum() {
        for (field, minimum) in [
            ("initialDelaySeconds", 0),
            ("timeoutSeconds", 1),
            ("periodSeconds", 1),
            ("successThreshold", 1),
            ("failureThreshold", 1),
        ] {
            let error = single_error(&format!(
                "readinessProbe:\n  guestAgentPing: {{}}\n  {field}: {}\n",
                minimum - 1
            ));
            assert_eq!(
                error,
                format!("readinessProbe.{field}: must be at least {minimum}")
            );
        }
    }

    #[test]
    fn http_get_is_refused_because_kubelet_can_probe_it_directly() {
        let error = single_error("readinessProbe:\n  httpGet:\n    port: 8080\n");
        assert_eq!(
            error,
            "readinessProbe.httpGet: the gateway runs only exec and guestAgentPing checks; \
             kubelet can probe httpGet directly, so keep that probe on the VMI"
        );
    }

    #[test]
    fn tcp_socket_is_refused_because_kubelet_can_probe_it_directly() {
        let error = single_error("livenessProbe:\n  tcpSocket:\n    port: 22\n");
        assert!(
            error.starts_with("livenessProbe.tcpSocket: the gateway runs only exec"),
            "{error}"
        );
        assert!(
            error.contains("kubelet can probe tcpSocket directly"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_top_level_field_is_an_error_listing_the_expected_fields() {
        let error = single_error(&liveness_ping("bogus: 1\n"));
        assert_eq!(
            error,
            "bogus: unknown field; expected one of listen, agent, mode, minIntervalSeconds, \
             livenessGraceSeconds, exposeOutput, outputExcerptBytes, readinessProbe, livenessProbe"
        );
    }

    #[test]
    fn an_unknown_probe_field_is_an_error_at_its_path() {
        let error = single_error(&liveness_ping("  bogus: 1\n"));
        assert!(
            error.starts_with(
                "livenessProbe.bogus: unknown field; expected one of exec, guestAgentPing"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_field_in_the_wrong_case_gets_a_suggestion() {
        let error = single_error(
            "readinessprobe:\n  guestAgentPing: {}\nlivenessProbe:\n  guestAgentPing: {}\n",
        );
        assert!(
            error.starts_with("readinessprobe: unknown field (did you mean readinessProbe?)"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_inside_exec_and_guest_agent_ping_are_errors() {
        let errors = errors_of(
            "readinessProbe:\n  exec:\n    command: [\"true\"]\n    shell: true\nlivenessProbe:\n  guestAgentPing: {timeout: 1}\n",
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(
            errors[0],
            "readinessProbe.exec.shell: unknown field; expected command"
        );
        assert!(
            errors[1].starts_with("livenessProbe.guestAgentPing.timeout: unknown field"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn an_empty_command_is_rejected() {
        let error = single_error("readinessProbe:\n  exec:\n    command: []\n");
        assert_eq!(
            error,
            "readinessProbe.exec.command: must not be empty: give the program and its arguments"
        );
    }

    #[test]
    fn an_exec_without_a_command_is_rejected() {
        let error = single_error("readinessProbe:\n  exec: {}\n");
        assert!(
            error.starts_with("readinessProbe.exec.command: must be set"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_program_name_is_rejected() {
        let error = single_error("readinessProbe:\n  exec:\n    command: [\"\", \"x\"]\n");
        assert!(
            error.starts_with("readinessProbe.exec.command[0]: must not be empty"),
            "{error}"
        );
    }

    #[test]
    fn a_nul_character_in_a_command_word_is_rejected() {
        let error = single_error("readinessProbe:\n  exec:\n    command: [\"cat\", \"a\\0b\"]\n");
        assert_eq!(
            error,
            "readinessProbe.exec.command[1]: must not contain a NUL character"
        );
    }

    #[test]
    fn a_command_given_as_one_string_is_rejected() {
        let error = single_error("readinessProbe:\n  exec:\n    command: cat /tmp/healthy.txt\n");
        assert!(
            error.starts_with(
                "readinessProbe.exec.command: must be a list of the program and its arguments"
            ),
            "{error}"
        );
        assert!(error.ends_with("(found a string)"), "{error}");
    }

    #[test]
    fn a_number_in_a_command_gets_the_quoting_hint() {
        let error = single_error("readinessProbe:\n  exec:\n    command: [sleep, 5]\n");
        assert_eq!(
            error,
            "readinessProbe.exec.command[1]: must be a string (found an integer; quote it: \"5\")"
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
    fn a_probe_integer_must_fit_in_32_bits_as_in_kubernetes() {
        let error = single_error(&liveness_ping("  failureThreshold: 2147483648\n"));
        assert_eq!(
            error,
            "livenessProbe.failureThreshold: must be at most 2147483647"
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
        assert_eq!(file.liveness, Some(probe(Handler::GuestAgentPing, 1)));
    }

    #[test]
    fn a_config_without_probes_is_rejected() {
        let error = single_error("agent: /run/qga.sock\n");
        assert_eq!(
            error,
            "no probe configured: set readinessProbe and/or livenessProbe"
        );
    }

    #[test]
    fn an_invalid_probe_is_not_also_reported_as_missing() {
        let error = single_error("readinessProbe: 5\n");
        assert_eq!(
            error,
            "readinessProbe: must be a mapping (found an integer)"
        );
    }

    #[test]
    fn a_listen_address_must_name_ip_and_port() {
        let error = single_error(&liveness_ping("listen: 8080\n"));
        assert_eq!(
            error,
            "listen: must be an IP address and port such as [::]:8080 or 0.0.0.0:8080 (found an integer)"
        );
        let file = parse_document(&liveness_ping("listen: 0.0.0.0:9000\n")).unwrap();
        assert_eq!(file.listen, Some(SocketAddr::from(([0, 0, 0, 0], 9000))));
    }

    #[test]
    fn an_agent_address_error_is_the_agent_parsers_own() {
        let error = single_error(&liveness_ping("agent: relative.sock\n"));
        let expected = AgentAddress::parse("relative.sock").unwrap_err();
        assert_eq!(error, format!("agent: {expected}"));
    }

    #[test]
    fn a_liveness_grace_of_0_turns_the_grace_off_and_negative_is_rejected() {
        let file = parse_document(&liveness_ping("livenessGraceSeconds: 0\n")).unwrap();
        assert_eq!(file.liveness_grace, Some(Duration::ZERO));
        let error = single_error(&liveness_ping("livenessGraceSeconds: -1\n"));
        assert_eq!(error, "livenessGraceSeconds: must be at least 0");
    }

    #[test]
    fn mode_is_on_demand_or_background() {
        let file = parse_document(&liveness_ping("mode: background\n")).unwrap();
        assert_eq!(file.mode, Some(Mode::Background));
        let file = parse_document(&liveness_ping("mode: onDemand\n")).unwrap();
        assert_eq!(file.mode, Some(Mode::OnDemand));
        let error = single_error(&liveness_ping("mode: Background\n"));
        assert_eq!(
            error,
            "mode: must be onDemand or background (found \"Background\")"
        );
    }

    #[test]
    fn min_interval_is_for_on_demand_mode_only() {
        let file = parse_document(&liveness_ping("minIntervalSeconds: 5\n")).unwrap();
        assert_eq!(file.min_interval, Some(Duration::from_secs(5)));
        let error = single_error(&liveness_ping("mode: background\nminIntervalSeconds: 5\n"));
        assert!(
            error.starts_with("minIntervalSeconds: applies to mode: onDemand only"),
            "{error}"
        );
    }

    #[test]
    fn the_output_excerpt_size_is_bounded() {
        let max = format!("outputExcerptBytes: {MAX_OUTPUT_EXCERPT_BYTES}\n");
        let file = parse_document(&liveness_ping(&max)).unwrap();
        assert_eq!(file.output_excerpt_bytes, Some(MAX_OUTPUT_EXCERPT_BYTES));
        let above = format!("outputExcerptBytes: {}\n", MAX_OUTPUT_EXCERPT_BYTES + 1);
        let error = single_error(&liveness_ping(&above));
        assert_eq!(
            error,
            format!("outputExcerptBytes: must be at most {MAX_OUTPUT_EXCERPT_BYTES}")
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
        let Some(Handler::Exec(command)) = file.readiness.map(|spec| spec.handler) else {
            panic!("expected an exec handler");
        };
        assert_eq!(command.args, ["on", "no"]);
    }

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
        let error = single_error("livenessProbe:\n  guestAgentPing: {}\n timeoutSeconds: 1\n");
        assert!(
            error.starts_with("invalid YAML at line 3 column "),
            "{error}"
        );
    }

    #[test]
    fn a_json_syntax_error_names_line_and_column() {
        let error = single_error("{\n  \"livenessProbe\": {\"guestAgentPing\": {}},\n}\n");
        assert!(
            error.starts_with("invalid JSON at line 3 column 1: "),
            "{error}"
        );
        assert!(!error.ends_with("column 1"), "{error}");
    }

    #[test]
    fn a_duplicate_key_in_yaml_is_a_syntax_error() {
        let error = single_error(&liveness_ping("  timeoutSeconds: 1\n  timeoutSeconds: 2\n"));
        assert!(
            error.starts_with("invalid YAML at line 4 column 3: "),
            "{error}"
        );
        assert!(error.contains("duplicate"), "{error}");
    }

    #[test]
    fn a_duplicate_key_in_json_is_a_syntax_error() {
        let error =
            single_error(r#"{"livenessProbe": {"guestAgentPing": {}}, "livenessProbe": null}"#);
        assert!(
            error.starts_with("invalid JSON at line 1 column "),
            "{error}"
        );
        assert!(error.contains("duplicate key \"livenessProbe\""), "{error}");
    }

    #[test]
    fn an_empty_document_is_one_clear_error() {
        for empty in ["", "# nothing here\n", "null\n"] {
            let error = single_error(empty);
            assert!(
                error.starts_with("the document is empty; expected a gateway config"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_document_that_is_not_a_mapping_says_what_it_is() {
        let error = single_error("- readinessProbe: {}\n");
        assert!(
            error.starts_with("the document must be a mapping (found a list)"),
            "{error}"
        );
        let error = single_error("hello\n");
        assert!(
            error.starts_with("the document must be a mapping (found a string)"),
            "{error}"
        );
    }

    #[test]
    fn a_probe_copied_from_a_kubevirt_vmi_with_every_integer_field_validates() {
        // The integer fields of the readinessProbe in KubeVirt's (OpenShift Virtualization's)
        // VMI health-check template, with a handler the gateway runs.
        let file = parse_document(
            "readinessProbe:\n  guestAgentPing: {}\n  initialDelaySeconds: 120\n  periodSeconds: 20\n  timeoutSeconds: 10\n  failureThreshold: 3\n  successThreshold: 3\n",
        )
        .unwrap();
        assert_eq!(
            file.readiness,
            Some(ProbeSpec {
                handler: Handler::GuestAgentPing,
                timeout: Duration::from_secs(10),
                initial_delay_seconds: 120,
                period_seconds: 20,
                success_threshold: 3,
                failure_threshold: 3,
            })
        );
    }

    #[test]
    fn parser_messages_are_printed_with_control_characters_escaped() {
        assert_eq!(printable("key\u{7}\tname"), "key\\u{7}\\tname");
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
