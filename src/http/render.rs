//! Probe reports as HTTP bodies: plain, verbose text, JSON. Pure functions.
//!
//! The verbose text format, modelled on kube-apiserver's `/readyz?verbose`: one `[+]name ok`
//! or `[-]name failed: REASON` line per check (`ok: NOTE` when a passing check has a note,
//! such as the liveness grace), each followed by indented `key: value` lines with the JSON
//! report's names, and a last line that sums it up:
//!
//! ```text
//! [+]agent ok
//!     handler: guestAgentPing
//!     result: success
//!     durationSeconds: 0.001
//!     checkedAt: 2026-11-25T01:02:03.456Z
//! [-]app failed: exec: exit code 3
//!     handler: exec
//!     result: failure
//!     exitCode: 3
//!     signal: null
//!     durationSeconds: 0.012
//!     checkedAt: 2026-11-25T01:02:03.456Z
//! readiness check failed
//! ```
//!
//! A probe written in KubeVirt's shape has one check, named after the probe
//! (`[-]readiness failed: ...`). When the probe's state answers instead of its checks
//! (starting, paused), the first line is `[+]` or `[-]` and the state's reason.

use std::fmt::Write as _;

use serde::Serialize;

use crate::probe::{CheckReport, CheckResult, ProbeReport};

/// What a report may show beyond the outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exposure {
    /// Include stdout/stderr excerpts (`exposeOutput`).
    pub output: bool,
}

/// The body of a plain response: `ok`, or the reason.
pub(crate) fn plain(report: &ProbeReport) -> String {
    if report.passed() {
        "ok\n".to_string()
    } else {
        format!("{}\n", report.reason_line())
    }
}

/// The verbose text report.
pub(crate) fn verbose(report: &ProbeReport, exposure: Exposure) -> String {
    let mut text = String::new();
    if let Some(held) = &report.held {
        let mark = if held.passed { '+' } else { '-' };
        let verdict = if held.passed { "ok" } else { "failed" };
        let _ = writeln!(text, "[{mark}]{} {verdict}: {}", report.probe, held.reason);
        let _ = writeln!(text, "    state: {}", held.standing.as_str());
    }
    for check in &report.checks {
        write_check(&mut text, check, exposure);
    }
    let verdict = if report.passed() { "passed" } else { "failed" };
    let _ = writeln!(text, "{} check {verdict}", report.probe);
    text
}

fn write_check(text: &mut String, check: &CheckReport, exposure: Exposure) {
    let mark = if check.passed() { '+' } else { '-' };
    let _ = write!(text, "[{mark}]{} ", check.name);
    match (&check.reason, check.passed()) {
        (None, true) => text.push_str("ok\n"),
        (Some(note), true) => {
            let _ = writeln!(text, "ok: {note}");
        }
        (_, false) => {
            let _ = writeln!(text, "failed: {}", check.reason_line());
        }
    }
    let json = JsonCheck::new(check, exposure);
    let details = &json.details;
    let _ = writeln!(text, "    handler: {}", json.handler);
    let _ = writeln!(text, "    result: {}", json.result.as_str());
    let shown = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
    if let (Some(exit_code), Some(signal)) = (details.exit_code, details.signal) {
        let _ = writeln!(text, "    exitCode: {}", shown(exit_code));
        let _ = writeln!(text, "    signal: {}", shown(signal));
    }
    if let (Some(stdout), Some(stderr)) = (&details.stdout, &details.stderr) {
        let _ = writeln!(text, "    stdout: {stdout:?}");
        let _ = writeln!(
            text,
            "    stdoutTruncated: {}",
            details.stdout_truncated.unwrap_or(false)
        );
        let _ = writeln!(text, "    stderr: {stderr:?}");
        let _ = writeln!(
            text,
            "    stderrTruncated: {}",
            details.stderr_truncated.unwrap_or(false)
        );
    }
    let _ = writeln!(text, "    durationSeconds: {}", json.duration_seconds);
    let _ = writeln!(text, "    checkedAt: {}", json.checked_at);
    if let Some(age) = details.reused_age_seconds {
        let _ = writeln!(text, "    reusedAgeSeconds: {age}");
    }
    if let Some(mode) = details.mode {
        let shown = |at: &Option<Option<String>>| at.clone().flatten().unwrap_or("null".into());
        let _ = writeln!(text, "    mode: {mode}");
        let successes = details.consecutive_successes.unwrap_or(0);
        let failures = details.consecutive_failures.unwrap_or(0);
        let _ = writeln!(text, "    consecutiveSuccesses: {successes}");
        let _ = writeln!(text, "    consecutiveFailures: {failures}");
        let _ = writeln!(
            text,
            "    lastCheckedAt: {}",
            shown(&details.last_checked_at)
        );
        let _ = writeln!(
            text,
            "    lastTransitionAt: {}",
            shown(&details.last_transition_at)
        );
    }
}

/// The JSON report.
pub(crate) fn json(report: &ProbeReport, exposure: Exposure) -> String {
    serde_json::to_string(&JsonReport::new(report, exposure))
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot serialize the report: {error}\"}}"))
}

/// The JSON body of a 503 from a probe route: the report, or, before any check is in force
/// (KubeVirt hook mode), an error body saying why. Only the OpenAPI document uses this type.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema for the OpenAPI document, never built")]
pub(crate) enum ProbeUnavailable {
    Report(Box<JsonReport>),
    Waiting(super::error::ErrorBody),
}

/// The JSON report's shape: exactly these fields (the API contract). When the answer rests
/// on exactly one check (a probe in KubeVirt's shape, or `/ready/<name>`), that check's
/// details are also at the top level, as before probes had named checks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonReport {
    #[schema(value_type = String, pattern = "^(readiness|liveness|startup)$", example = "readiness")]
    pub probe: &'static str,
    /// What kubelet sees: `success` is 200, `failure` is 503.
    #[schema(value_type = String, pattern = "^(success|failure)$", example = "failure")]
    pub status: &'static str,
    /// The outcome: the state's, or the first failing check's.
    pub result: CheckResult,
    /// Why the probe failed (each failing named check's reason after its name); null on
    /// success unless there is a note (the liveness grace).
    #[schema(example = "app: exec: exit code 1", required = true)]
    pub reason: Option<String>,
    /// How long the answer took (the checks run together); with one check, how long it took.
    #[schema(minimum = 0.0, example = 0.013)]
    pub duration_seconds: f64,
    /// When the answer started (RFC 3339); with one check, when it started.
    #[schema(format = DateTime, example = "2026-11-25T02:03:04.123Z")]
    pub checked_at: String,
    /// Set when the probe's state answered instead of its checks: `starting` (the startup
    /// probe has not passed: liveness passes, readiness fails), `didNotStart`, `paused`
    /// (for maintenance: liveness passes, readiness fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(starting|didNotStart|paused)$")]
    pub state: Option<&'static str>,
    /// One entry per check the answer rests on, in the probe's order; for `/started`, the
    /// startup probe's latest checks.
    pub checks: Vec<JsonCheck>,
    /// With one check: its handler.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(exec|guestAgentPing)$", example = "exec")]
    pub handler: Option<&'static str>,
    /// With one check: its details, as in `checks`.
    #[serde(flatten)]
    pub details: JsonCheckDetails,
}

/// One check in a JSON report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonCheck {
    /// The check's name: a named check's, or for a probe in KubeVirt's shape the probe's.
    #[schema(value_type = String, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", example = "app")]
    pub name: String,
    #[schema(value_type = String, pattern = "^(exec|guestAgentPing)$", example = "exec")]
    pub handler: &'static str,
    /// `success` when the check counts as passed.
    #[schema(value_type = String, pattern = "^(success|failure)$", example = "failure")]
    pub status: &'static str,
    pub result: CheckResult,
    /// Why the check failed; null on success unless there is a note.
    #[schema(example = "exec: exit code 1", required = true)]
    pub reason: Option<String>,
    /// How long the check took.
    #[schema(minimum = 0.0, example = 0.013)]
    pub duration_seconds: f64,
    /// When the check started (RFC 3339).
    #[schema(format = DateTime, example = "2026-11-25T02:03:04.123Z")]
    pub checked_at: String,
    #[serde(flatten)]
    pub details: JsonCheckDetails,
}

/// What a check's report adds to its outcome, where it applies: the guest process of an
/// exec check, result reuse, background state.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonCheckDetails {
    /// Exec checks only: the guest process's exit code; null if it was killed or gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub exit_code: Option<Option<i64>>,
    /// Exec checks only: the signal that killed the guest process, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub signal: Option<Option<i64>>,
    /// Exec checks with `exposeOutput: true` only: a lossy UTF-8 excerpt of stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Exec checks with `exposeOutput: true` only: a lossy UTF-8 excerpt of stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// With `stdout`: the excerpt or the agent cut the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_truncated: Option<bool>,
    /// With `stderr`: the excerpt or the agent cut the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_truncated: Option<bool>,
    /// `minIntervalSeconds` only: this result was reused; its age in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, example = 0.8)]
    pub reused_age_seconds: Option<f64>,
    /// Background mode only: `background`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^background$")]
    pub mode: Option<&'static str>,
    /// Background mode only: successes in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub consecutive_successes: Option<u32>,
    /// Background mode only: failures in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub consecutive_failures: Option<u32>,
    /// Background mode only: when the latest run started; null before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_checked_at: Option<Option<String>>,
    /// Background mode only: when the state last flipped; null while it is the initial one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_transition_at: Option<Option<String>>,
}

impl JsonCheck {
    pub(crate) fn new(check: &CheckReport, exposure: Exposure) -> Self {
        JsonCheck {
            name: check.name.to_string(),
            handler: check.handler,
            status: status(check.passed()),
            result: check.result,
            reason: check.reason.clone(),
            duration_seconds: micros(check.duration),
            checked_at: rfc3339(check.checked_at),
            details: JsonCheckDetails::new(check, exposure),
        }
    }
}

impl JsonCheckDetails {
    fn new(check: &CheckReport, exposure: Exposure) -> Self {
        let exec = (check.handler == "exec").then(|| check.exec.clone().unwrap_or_default());
        let output = exec.as_ref().filter(|_| exposure.output);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        JsonCheckDetails {
            exit_code: exec.as_ref().map(|e| e.exit_code),
            signal: exec.as_ref().map(|e| e.signal),
            stdout: output.map(|e| text(&e.stdout.bytes)),
            stderr: output.map(|e| text(&e.stderr.bytes)),
            stdout_truncated: output.map(|e| e.stdout.truncated),
            stderr_truncated: output.map(|e| e.stderr.truncated),
            reused_age_seconds: check
                .reused_age
                .map(|age| (age.as_secs_f64() * 1e3).round() / 1e3),
            mode: check.background.as_ref().map(|_| "background"),
            consecutive_successes: check.background.as_ref().map(|b| b.consecutive_successes),
            consecutive_failures: check.background.as_ref().map(|b| b.consecutive_failures),
            last_checked_at: check
                .background
                .as_ref()
                .map(|b| b.last_checked_at.map(rfc3339)),
            last_transition_at: check
                .background
                .as_ref()
                .map(|b| b.last_transition_at.map(rfc3339)),
        }
    }
}

impl JsonReport {
    pub(crate) fn new(report: &ProbeReport, exposure: Exposure) -> Self {
        let only = report.only_check();
        // With one check, its own time and duration, as before probes had named checks.
        let (duration, checked_at) = match only {
            Some(check) => (check.duration, check.checked_at),
            None => (report.duration, report.checked_at),
        };
        JsonReport {
            probe: report.probe.as_str(),
            status: status(report.passed()),
            result: report.result(),
            reason: report.reason(),
            duration_seconds: micros(duration),
            checked_at: rfc3339(checked_at),
            state: report.held.as_ref().map(|held| held.standing.as_str()),
            checks: report
                .checks
                .iter()
                .map(|check| JsonCheck::new(check, exposure))
                .collect(),
            handler: only.map(|check| check.handler),
            details: only
                .map(|check| JsonCheckDetails::new(check, exposure))
                .unwrap_or_default(),
        }
    }
}

fn status(passed: bool) -> &'static str {
    if passed { "success" } else { "failure" }
}

fn micros(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e6
}

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::agent::OutputExcerpt;
    use crate::config::{CheckName, ProbeKind};
    use crate::probe::{ExecDetails, Held, Standing};

    const AT: std::time::SystemTime = UNIX_EPOCH;

    fn at() -> std::time::SystemTime {
        AT + Duration::from_secs(1_700_000_000)
    }

    fn failed_exec(name: &str) -> CheckReport {
        CheckReport {
            name: CheckName::parse(name).unwrap(),
            handler: "exec",
            result: CheckResult::Failure,
            reason: Some("exec: exit code 1".into()),
            duration: Duration::from_millis(12),
            checked_at: at(),
            exec: Some(ExecDetails {
                exit_code: Some(1),
                signal: None,
                stdout: OutputExcerpt {
                    bytes: b"out".to_vec(),
                    truncated: false,
                },
                stderr: OutputExcerpt {
                    bytes: b"no such file".to_vec(),
                    truncated: true,
                },
            }),
            background: None,
            reused_age: None,
            waiting: false,
        }
    }

    fn passed_ping(name: &str) -> CheckReport {
        CheckReport {
            handler: "guestAgentPing",
            exec: None,
            result: CheckResult::Success,
            reason: None,
            ..failed_exec(name)
        }
    }

    fn readiness(checks: Vec<CheckReport>) -> ProbeReport {
        ProbeReport {
            probe: ProbeKind::Readiness,
            checks,
            held: None,
            duration: Duration::from_millis(12),
            checked_at: at(),
        }
    }

    fn json_of(report: &ProbeReport, output: bool) -> serde_json::Value {
        serde_json::from_str(&json(report, Exposure { output })).unwrap()
    }

    #[test]
    fn json_of_one_check_has_the_contract_fields_and_output_only_when_exposed() {
        let report = readiness(vec![failed_exec("readiness")]);
        let hidden = json_of(&report, false);
        let mut keys: Vec<_> = hidden.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "checkedAt",
                "checks",
                "durationSeconds",
                "exitCode",
                "handler",
                "probe",
                "reason",
                "result",
                "signal",
                "status"
            ]
        );
        assert_eq!(hidden["status"], "failure");
        assert_eq!(hidden["reason"], "exec: exit code 1");
        assert_eq!(hidden["checkedAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(hidden["checks"][0]["name"], "readiness");
        assert_eq!(hidden["checks"][0]["exitCode"], 1);
        let shown = json_of(&report, true);
        assert_eq!(shown["stderr"], "no such file");
        assert_eq!(shown["stderrTruncated"], true);
        assert_eq!(shown["stdoutTruncated"], false);
        assert_eq!(shown["checks"][0]["stderr"], "no such file");
    }

    #[test]
    fn json_of_named_checks_has_one_entry_each_and_names_the_failing_ones_in_the_reason() {
        let report = readiness(vec![passed_ping("agent"), failed_exec("app")]);
        let value = json_of(&report, false);
        assert_eq!(value["status"], "failure");
        assert_eq!(value["result"], "failure");
        assert_eq!(value["reason"], "app: exec: exit code 1");
        assert!(value.get("handler").is_none(), "no one check to describe");
        assert!(value.get("exitCode").is_none());
        let checks = value["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0]["name"], "agent");
        assert_eq!(checks[0]["status"], "success");
        assert!(checks[0].get("exitCode").is_none());
        assert_eq!(checks[1]["name"], "app");
        assert_eq!(checks[1]["status"], "failure");
        assert_eq!(checks[1]["exitCode"], 1);
    }

    #[test]
    fn ping_reports_have_no_exec_fields() {
        let value = json_of(&readiness(vec![passed_ping("readiness")]), true);
        assert!(value.get("exitCode").is_none());
        assert!(value.get("stdout").is_none());
        assert_eq!(value["reason"], serde_json::Value::Null);
    }

    #[test]
    fn verbose_text_has_a_mark_line_per_check_and_ends_with_the_verdict() {
        let report = readiness(vec![passed_ping("agent"), failed_exec("app")]);
        let text = verbose(&report, Exposure { output: false });
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "[+]agent ok");
        assert!(
            lines.contains(&"[-]app failed: exec: exit code 1"),
            "{text}"
        );
        assert!(lines.contains(&"    exitCode: 1"));
        assert!(!text.contains("stderr"));
        assert_eq!(lines.last(), Some(&"readiness check failed"));
        assert_eq!(plain(&report), "app: exec: exit code 1\n");
    }

    #[test]
    fn a_held_answer_says_its_state_and_runs_no_check() {
        let report = ProbeReport {
            probe: ProbeKind::Liveness,
            held: Some(Held {
                standing: Standing::Paused,
                passed: true,
                reason: "paused for maintenance (updates)".into(),
            }),
            ..readiness(vec![])
        };
        let value = json_of(&report, false);
        assert_eq!(value["status"], "success");
        assert_eq!(value["state"], "paused");
        assert_eq!(value["reason"], "paused for maintenance (updates)");
        assert_eq!(value["checks"], serde_json::json!([]));
        let text = verbose(&report, Exposure { output: false });
        assert!(
            text.starts_with(
                "[+]liveness ok: paused for maintenance (updates)\n    state: paused\n"
            ),
            "{text}"
        );
        assert_eq!(plain(&report), "ok\n");
    }
}
