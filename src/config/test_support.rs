//! What the config parser's unit tests share: reading a document that must be invalid, and
//! the probes they expect. One place, so that every layer's tests read errors the same way.

use std::time::Duration;

use super::{CheckName, CheckSpec, ExecCommand, Handler, ProbeKind, ProbeSpec, parse_document};

/// The rendered errors of a document that must be invalid, one line each.
pub(super) fn errors_of(text: &str) -> Vec<String> {
    match parse_document(text) {
        Ok(file) => panic!("expected errors, got {file:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// The one error of a document that must have exactly one.
pub(super) fn single_error(text: &str) -> String {
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors[0].clone()
}

/// The one error of a document that must have exactly one, which must start with `prefix`;
/// returned for what else a test asserts about it.
pub(super) fn single_error_starting_with(text: &str, prefix: &str) -> String {
    let error = single_error(text);
    assert!(error.starts_with(prefix), "{error}");
    error
}

/// A gateway config with a `guestAgentPing` liveness probe, followed by `extra` (a probe
/// field when indented by two spaces, a top-level field otherwise).
pub(super) fn liveness_ping(extra: &str) -> String {
    format!("livenessProbe:\n  guestAgentPing: {{}}\n{extra}")
}

/// A readiness probe in KubeVirt's shape with `handler` and `timeout_seconds`, and
/// Kubernetes' defaults for the rest.
pub(super) fn probe(handler: Handler, timeout_seconds: u64) -> ProbeSpec {
    probe_of(ProbeKind::Readiness, handler, timeout_seconds)
}

/// A probe of `kind` in KubeVirt's shape with `handler` and `timeout_seconds`, and
/// Kubernetes' defaults for the rest.
pub(super) fn probe_of(kind: ProbeKind, handler: Handler, timeout_seconds: u64) -> ProbeSpec {
    ProbeSpec {
        checks: vec![CheckSpec {
            name: CheckName::of_probe(kind),
            handler,
            timeout: Duration::from_secs(timeout_seconds),
        }],
        initial_delay_seconds: 0,
        period_seconds: 10,
        success_threshold: 1,
        failure_threshold: 3,
    }
}

/// The README's readiness check: `exec` of `cat /tmp/healthy.txt`.
pub(super) fn cat_healthy(timeout_seconds: u64) -> ProbeSpec {
    probe(
        Handler::Exec(ExecCommand {
            path: "cat".into(),
            args: vec!["/tmp/healthy.txt".into()],
        }),
        timeout_seconds,
    )
}

/// A `guestAgentPing: {}` liveness probe with every default.
pub(super) fn guest_agent_ping() -> ProbeSpec {
    probe_of(ProbeKind::Liveness, Handler::GuestAgentPing, 1)
}
