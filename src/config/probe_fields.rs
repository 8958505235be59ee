//! The probe fields: one probe, in KubeVirt's VMI Probe shape (one handler) or made of
//! named checks, read into a [`ProbeSpec`]; and one named check's definition.
//!
//! This module owns the Probe's fields, Kubernetes' defaults and minimums for its integers,
//! and its handlers: `exec` (with the command as an argument vector) and `guestAgentPing`,
//! while `httpGet` and `tcpSocket` are refused as kubelet's. The same rules serve the
//! gateway config, the manifest annotation and a manifest's own probes, so that the same
//! mistake reads the same wherever it is made.

use std::time::Duration;

use serde_json::{Map, Value};

use super::checks::Definitions;
use super::walk::{
    Errors, FieldPath, at_least, describe, expect_mapping, in_range, integer, set_value, string,
    unknown_field_message, unknown_fields,
};
use super::{CheckName, CheckSpec, ExecCommand, Handler, ProbeKind, ProbeSpec};

/// The fields of KubeVirt's VMI Probe (and of Kubernetes' startupProbe).
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

/// The field of a probe that lists its named checks, where named checks can be defined.
const CHECKS_FIELD: &str = "checks";

/// The fields of a named check: what it runs and how long it may take.
const CHECK_FIELDS: &[&str] = &["exec", "guestAgentPing", "timeoutSeconds"];

/// The probe fields that are the schedule of a probe, not of one of its checks.
const SCHEDULE_FIELDS: &[&str] = &[
    "initialDelaySeconds",
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

/// Reads the probe of `kind` from its field in `map`, if set. `checks` holds the named
/// checks the probe may list; `None` where there are none to list (a manifest's own
/// probes, which are KubeVirt's shape only).
pub(super) fn read_probe_field(
    map: &Map<String, Value>,
    path: &FieldPath,
    kind: ProbeKind,
    checks: Option<&mut Definitions>,
    errors: &mut Errors,
) -> Option<ProbeSpec> {
    let value = set_value(map, kind.field())?;
    read_probe(value, &path.field(kind.field()), kind, checks, errors)
}

/// Reads one probe: its schedule, with Kubernetes' defaults and minimums, and either its
/// one handler (KubeVirt's shape) or the named checks it lists.
fn read_probe(
    value: &Value,
    path: &FieldPath,
    kind: ProbeKind,
    definitions: Option<&mut Definitions>,
    errors: &mut Errors,
) -> Option<ProbeSpec> {
    let map = expect_mapping(value, path, errors)?;
    let known: Vec<&str> = definitions
        .is_some()
        .then_some(CHECKS_FIELD)
        .into_iter()
        .chain(PROBE_FIELDS.iter().copied())
        .collect();
    for key in unknown_fields(map, &known) {
        let message = match key {
            CHECKS_FIELD => "named checks are written in the gateway's config or the \
                             probe-gateway.kubevirt.io/probes annotation, not in the VMI's own \
                             probes"
                .to_string(),
            _ => unknown_field_message(key, &known),
        };
        errors.add(&path.field(key), message);
    }
    let initial_delay = read_probe_integer(map, path, &INITIAL_DELAY_SECONDS, errors);
    let period = read_probe_integer(map, path, &PERIOD_SECONDS, errors);
    let success = read_probe_integer(map, path, &SUCCESS_THRESHOLD, errors);
    let failure = read_probe_integer(map, path, &FAILURE_THRESHOLD, errors);
    if kind != ProbeKind::Readiness && success.is_some_and(|n| n != 1) {
        errors.add(
            &path.field(SUCCESS_THRESHOLD.name),
            format!("must be 1 for {}", kind.field()),
        );
        return None;
    }
    let listed = definitions.zip(set_value(map, CHECKS_FIELD));
    let checks = match listed {
        Some((definitions, list)) => {
            if PROBE_HANDLERS
                .iter()
                .any(|name| set_value(map, name).is_some())
            {
                errors.add(
                    path,
                    format!("set either checks or one handler ({GATEWAY_HANDLERS}), not both"),
                );
            }
            if set_value(map, TIMEOUT_SECONDS.name).is_some() {
                errors.add(
                    &path.field(TIMEOUT_SECONDS.name),
                    "a probe with checks has no timeout of its own: each check has its \
                     timeoutSeconds, under checks.<name>",
                );
            }
            definitions.resolve(list, &path.field(CHECKS_FIELD), errors)
        }
        None => {
            let handler = read_handler(map, path, errors);
            let timeout = read_probe_integer(map, path, &TIMEOUT_SECONDS, errors);
            Some(vec![CheckSpec {
                name: CheckName::of_probe(kind),
                handler: handler?,
                timeout: seconds(timeout?),
            }])
        }
    };
    Some(ProbeSpec {
        checks: checks?,
        initial_delay_seconds: initial_delay?,
        period_seconds: period?,
        success_threshold: success?,
        failure_threshold: failure?,
    })
}

/// Reads the definition of the check `name`: its one handler and its timeout.
pub(super) fn read_check_definition(
    value: &Value,
    path: &FieldPath,
    name: CheckName,
    errors: &mut Errors,
) -> Option<CheckSpec> {
    let map = expect_mapping(value, path, errors)?;
    let known: Vec<&str> = CHECK_FIELDS
        .iter()
        .chain(PROBE_HANDLERS)
        .chain(SCHEDULE_FIELDS)
        .copied()
        .collect();
    for key in unknown_fields(map, &known) {
        errors.add(&path.field(key), unknown_field_message(key, CHECK_FIELDS));
    }
    for key in SCHEDULE_FIELDS {
        if set_value(map, key).is_some() {
            errors.add(
                &path.field(key),
                "belongs to the probe that lists this check, not to the check",
            );
        }
    }
    let handler = read_handler(map, path, errors);
    let timeout = read_probe_integer(map, path, &TIMEOUT_SECONDS, errors);
    Some(CheckSpec {
        name,
        handler: handler?,
        timeout: seconds(timeout?),
    })
}

fn seconds(count: u32) -> Duration {
    Duration::from_secs(u64::from(count))
}

/// An integer field of a probe: its Kubernetes default and minimum.
struct ProbeInteger {
    name: &'static str,
    default: u32,
    minimum: u32,
}

impl ProbeInteger {
    const fn new(name: &'static str, default: u32, minimum: u32) -> ProbeInteger {
        ProbeInteger {
            name,
            default,
            minimum,
        }
    }
}

const TIMEOUT_SECONDS: ProbeInteger = ProbeInteger::new("timeoutSeconds", 1, 1);
const INITIAL_DELAY_SECONDS: ProbeInteger = ProbeInteger::new("initialDelaySeconds", 0, 0);
const PERIOD_SECONDS: ProbeInteger = ProbeInteger::new("periodSeconds", 10, 1);
const SUCCESS_THRESHOLD: ProbeInteger = ProbeInteger::new("successThreshold", 1, 1);
const FAILURE_THRESHOLD: ProbeInteger = ProbeInteger::new("failureThreshold", 3, 1);

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
#[cfg(test)]
mod tests {

    use crate::config::test_support::{
        errors_of, liveness_ping, probe, single_error, single_error_starting_with,
    };
    use crate::config::{Handler, ProbeSpec, parse_document};

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
        let error = single_error_starting_with(
            "livenessProbe:\n  guestAgentPing:\n",
            "livenessProbe: exactly one of",
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
        let error = single_error_starting_with(
            "livenessProbe:\n  tcpSocket:\n    port: 22\n",
            "livenessProbe.tcpSocket: the gateway runs only exec",
        );
        assert!(
            error.contains("kubelet can probe tcpSocket directly"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_probe_field_is_an_error_at_its_path() {
        single_error_starting_with(
            &liveness_ping("  bogus: 1\n"),
            "livenessProbe.bogus: unknown field; expected one of checks, exec, guestAgentPing",
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
        single_error_starting_with(
            "readinessProbe:\n  exec: {}\n",
            "readinessProbe.exec.command: must be set",
        );
    }

    #[test]
    fn an_empty_program_name_is_rejected() {
        single_error_starting_with(
            "readinessProbe:\n  exec:\n    command: [\"\", \"x\"]\n",
            "readinessProbe.exec.command[0]: must not be empty",
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
        let error = single_error_starting_with(
            "readinessProbe:\n  exec:\n    command: cat /tmp/healthy.txt\n",
            "readinessProbe.exec.command: must be a list of the program and its arguments",
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
    fn a_probe_integer_must_fit_in_32_bits_as_in_kubernetes() {
        let error = single_error(&liveness_ping("  failureThreshold: 2147483648\n"));
        assert_eq!(
            error,
            "livenessProbe.failureThreshold: must be at most 2147483647"
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
                initial_delay_seconds: 120,
                period_seconds: 20,
                success_threshold: 3,
                failure_threshold: 3,
                ..probe(Handler::GuestAgentPing, 10)
            })
        );
    }
}
