//! Probe reports as HTTP bodies: plain, verbose text, JSON. Pure functions.
//!
//! The verbose text format, modelled on kube-apiserver's `/readyz?verbose`:
//!
//! ```text
//! [-]readiness exec failed: exec: exit code 1
//!     result: failure
//!     exitCode: 1
//!     durationSeconds: 0.012
//!     checkedAt: 2026-11-25T01:02:03.456Z
//! readiness check failed
//! ```
//!
//! The first line is `[+]` or `[-]`, the probe, the handler, and `ok` or `failed: REASON`
//! (`ok: NOTE` when a passing check has a note, such as the liveness grace). Indented
//! `key: value` lines follow, with the JSON report's names; the last line sums it up.

use std::fmt::Write as _;

use serde::Serialize;

use crate::probe::{CheckResult, ProbeReport};

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
    let mark = if report.passed() { '+' } else { '-' };
    let _ = write!(text, "[{mark}]{} {} ", report.probe, report.handler);
    match (&report.reason, report.passed()) {
        (None, true) => text.push_str("ok\n"),
        (Some(note), true) => {
            let _ = writeln!(text, "ok: {note}");
        }
        (_, false) => {
            let _ = writeln!(text, "failed: {}", report.reason_line());
        }
    }
    let json = JsonReport::new(report, exposure);
    let _ = writeln!(text, "    result: {}", json.result.as_str());
    let shown = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
    if let (Some(exit_code), Some(signal)) = (json.exit_code, json.signal) {
        let _ = writeln!(text, "    exitCode: {}", shown(exit_code));
        let _ = writeln!(text, "    signal: {}", shown(signal));
    }
    if let (Some(stdout), Some(stderr)) = (&json.stdout, &json.stderr) {
        let _ = writeln!(text, "    stdout: {stdout:?}");
        let _ = writeln!(
            text,
            "    stdoutTruncated: {}",
            json.stdout_truncated.unwrap_or(false)
        );
        let _ = writeln!(text, "    stderr: {stderr:?}");
        let _ = writeln!(
            text,
            "    stderrTruncated: {}",
            json.stderr_truncated.unwrap_or(false)
        );
    }
    let _ = writeln!(text, "    durationSeconds: {}", json.duration_seconds);
    let _ = writeln!(text, "    checkedAt: {}", json.checked_at);
    if let Some(age) = json.reused_age_seconds {
        let _ = writeln!(text, "    reusedAgeSeconds: {age}");
    }
    if let Some(mode) = json.mode {
        let shown = |at: &Option<Option<String>>| at.clone().flatten().unwrap_or("null".into());
        let _ = writeln!(text, "    mode: {mode}");
        let successes = json.consecutive_successes.unwrap_or(0);
        let failures = json.consecutive_failures.unwrap_or(0);
        let _ = writeln!(text, "    consecutiveSuccesses: {successes}");
        let _ = writeln!(text, "    consecutiveFailures: {failures}");
        let _ = writeln!(text, "    lastCheckedAt: {}", shown(&json.last_checked_at));
        let _ = writeln!(
            text,
            "    lastTransitionAt: {}",
            shown(&json.last_transition_at)
        );
    }
    let verdict = if report.passed() { "passed" } else { "failed" };
    let _ = writeln!(text, "{} check {verdict}", report.probe);
    text
}

/// The JSON report.
pub(crate) fn json(report: &ProbeReport, exposure: Exposure) -> String {
    serde_json::to_string(&JsonReport::new(report, exposure))
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot serialize the report: {error}\"}}"))
}

/// The JSON body of a 503 from `/ready` or `/live`: the report of the failed check, or,
/// before any check is in force (KubeVirt hook mode), an error body saying why. Only the
/// OpenAPI document uses this type.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "a schema for the OpenAPI document, never built")]
pub(crate) enum ProbeUnavailable {
    Report(Box<JsonReport>),
    Waiting(super::error::ErrorBody),
}

/// The JSON report's shape: exactly these fields (the API contract).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonReport {
    #[schema(value_type = String, pattern = "^(readiness|liveness)$", example = "readiness")]
    pub probe: &'static str,
    #[schema(value_type = String, pattern = "^(exec|guestAgentPing)$", example = "exec")]
    pub handler: &'static str,
    /// What kubelet sees: `success` is 200, `failure` is 503.
    #[schema(value_type = String, pattern = "^(success|failure)$", example = "failure")]
    pub status: &'static str,
    pub result: CheckResult,
    /// Why the check failed; null on success unless there is a note (the liveness grace).
    #[schema(example = "exec: exit code 1", required = true)]
    pub reason: Option<String>,
    /// How long the check took.
    #[schema(minimum = 0.0, example = 0.013)]
    pub duration_seconds: f64,
    /// When the check started (RFC 3339).
    #[schema(format = DateTime, example = "2026-11-25T02:03:04.123Z")]
    pub checked_at: String,
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
    /// Background mode only: when the latest check started; null before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_checked_at: Option<Option<String>>,
    /// Background mode only: when the state last flipped; null while it is the initial one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_transition_at: Option<Option<String>>,
}

impl JsonReport {
    pub(crate) fn new(report: &ProbeReport, exposure: Exposure) -> Self {
        let exec = (report.handler == "exec").then(|| report.exec.clone().unwrap_or_default());
        let output = exec.as_ref().filter(|_| exposure.output);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        JsonReport {
            probe: report.probe.as_str(),
            handler: report.handler,
            status: if report.passed() {
                "success"
            } else {
                "failure"
            },
            result: report.result,
            reason: report.reason.clone(),
            duration_seconds: (report.duration.as_secs_f64() * 1e6).round() / 1e6,
            checked_at: rfc3339(report.checked_at),
            exit_code: exec.as_ref().map(|e| e.exit_code),
            signal: exec.as_ref().map(|e| e.signal),
            stdout: output.map(|e| text(&e.stdout.bytes)),
            stderr: output.map(|e| text(&e.stderr.bytes)),
            stdout_truncated: output.map(|e| e.stdout.truncated),
            stderr_truncated: output.map(|e| e.stderr.truncated),
            reused_age_seconds: report
                .reused_age
                .map(|age| (age.as_secs_f64() * 1e3).round() / 1e3),
            mode: report.background.as_ref().map(|_| "background"),
            consecutive_successes: report.background.as_ref().map(|b| b.consecutive_successes),
            consecutive_failures: report.background.as_ref().map(|b| b.consecutive_failures),
            last_checked_at: report
                .background
                .as_ref()
                .map(|b| b.last_checked_at.map(rfc3339)),
            last_transition_at: report
                .background
                .as_ref()
                .map(|b| b.last_transition_at.map(rfc3339)),
        }
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::agent::OutputExcerpt;
    use crate::config::ProbeKind;
    use crate::probe::ExecDetails;

    fn failed_exec() -> ProbeReport {
        ProbeReport {
            probe: ProbeKind::Readiness,
            handler: "exec",
            result: CheckResult::Failure,
            reason: Some("exec: exit code 1".into()),
            duration: Duration::from_millis(12),
            checked_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
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
        }
    }

    #[test]
    fn json_has_exactly_the_contract_fields_and_output_only_when_exposed() {
        let hidden: serde_json::Value =
            serde_json::from_str(&json(&failed_exec(), Exposure { output: false })).unwrap();
        let mut keys: Vec<_> = hidden.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "checkedAt",
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
        assert_eq!(hidden["checkedAt"], "2023-11-14T22:13:20.000Z");
        let shown: serde_json::Value =
            serde_json::from_str(&json(&failed_exec(), Exposure { output: true })).unwrap();
        assert_eq!(shown["stderr"], "no such file");
        assert_eq!(shown["stderrTruncated"], true);
        assert_eq!(shown["stdoutTruncated"], false);
    }

    #[test]
    fn ping_reports_have_no_exec_fields() {
        let report = ProbeReport {
            handler: "guestAgentPing",
            exec: None,
            result: CheckResult::Success,
            reason: None,
            probe: ProbeKind::Liveness,
            ..failed_exec()
        };
        let value: serde_json::Value =
            serde_json::from_str(&json(&report, Exposure { output: true })).unwrap();
        assert!(value.get("exitCode").is_none());
        assert!(value.get("stdout").is_none());
        assert_eq!(value["reason"], serde_json::Value::Null);
    }

    #[test]
    fn verbose_text_starts_with_a_mark_line_and_ends_with_the_verdict() {
        let text = verbose(&failed_exec(), Exposure { output: false });
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "[-]readiness exec failed: exec: exit code 1");
        assert!(lines.contains(&"    exitCode: 1"));
        assert!(!text.contains("stderr"));
        assert_eq!(lines.last(), Some(&"readiness check failed"));
    }
}
