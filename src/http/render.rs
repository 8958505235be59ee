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
pub struct Exposure {
    /// Include stdout/stderr excerpts (`exposeOutput`).
    pub output: bool,
}

/// The body of a plain response: `ok`, or the reason.
pub fn plain(report: &ProbeReport) -> String {
    if report.passed() {
        "ok\n".to_string()
    } else {
        format!("{}\n", report.reason_line())
    }
}

/// The verbose text report.
pub fn verbose(report: &ProbeReport, exposure: Exposure) -> String {
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
    if let Some(exec) = &json.exec {
        let shown = |v: Option<i64>| v.map_or("null".to_string(), |v| v.to_string());
        let _ = writeln!(text, "    exitCode: {}", shown(exec.exit_code));
        let _ = writeln!(text, "    signal: {}", shown(exec.signal));
        if let Some(output) = &exec.output {
            let _ = writeln!(text, "    stdout: {:?}", output.stdout);
            let _ = writeln!(text, "    stdoutTruncated: {}", output.stdout_truncated);
            let _ = writeln!(text, "    stderr: {:?}", output.stderr);
            let _ = writeln!(text, "    stderrTruncated: {}", output.stderr_truncated);
        }
    }
    let _ = writeln!(text, "    durationSeconds: {}", json.duration_seconds);
    let _ = writeln!(text, "    checkedAt: {}", json.checked_at);
    let verdict = if report.passed() { "passed" } else { "failed" };
    let _ = writeln!(text, "{} check {verdict}", report.probe);
    text
}

/// The JSON report.
pub fn json(report: &ProbeReport, exposure: Exposure) -> String {
    serde_json::to_string(&JsonReport::new(report, exposure))
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot serialize the report: {error}\"}}"))
}

/// The JSON report's shape: exactly these fields (the API contract).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonReport {
    pub probe: &'static str,
    pub handler: &'static str,
    pub status: &'static str,
    pub result: CheckResult,
    pub reason: Option<String>,
    pub duration_seconds: f64,
    pub checked_at: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub exec: Option<JsonExec>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonExec {
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub output: Option<JsonOutput>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonOutput {
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl JsonReport {
    pub fn new(report: &ProbeReport, exposure: Exposure) -> Self {
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
            checked_at: humantime::format_rfc3339_millis(report.checked_at).to_string(),
            exec: (report.handler == "exec").then(|| {
                let details = report.exec.clone().unwrap_or_default();
                JsonExec {
                    exit_code: details.exit_code,
                    signal: details.signal,
                    output: exposure.output.then(|| JsonOutput {
                        stdout: String::from_utf8_lossy(&details.stdout.bytes).into_owned(),
                        stderr: String::from_utf8_lossy(&details.stderr.bytes).into_owned(),
                        stdout_truncated: details.stdout.truncated,
                        stderr_truncated: details.stderr.truncated,
                    }),
                }
            }),
        }
    }
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
