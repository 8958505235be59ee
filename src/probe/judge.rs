//! [`ProbeCheck`]: one check as one probe takes it. The run is the check's (shared by the
//! probes that list it); what it means is the probe's: a check that could not reach the
//! agent is judged by the domain's state ([`domain_rules`]) and, for liveness and startup,
//! by the liveness grace; the result is counted and logged under the probe.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, timeout_at};

use super::domain_rules::{self, StartupVerdict, Verdict};
use super::handlers::Outcome;
use super::report::{CheckReport, CheckResult};
use super::runner::{CheckRun, CheckRunner, PendingRun, no_run};
use crate::config::{CheckName, ProbeKind};
use crate::metrics::Metrics;

/// Past a check's timeout, the agent task has already answered; this margin only guards the
/// promise that an answer comes within the longest timeout + 0.5 s whatever happens.
pub(crate) const RESPONSE_MARGIN: Duration = Duration::from_millis(400);

/// The window after start-up in which a check that cannot reach an agent that never
/// answered passes liveness (and is not counted against startup): a booting guest, or a
/// migration target whose guest has not arrived yet, is not a dead one. It ends early once
/// the agent has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LivenessGrace {
    pub started: Instant,
    pub window: Duration,
}

/// One check of one probe.
pub(crate) struct ProbeCheck {
    kind: ProbeKind,
    runner: Arc<CheckRunner>,
    /// Liveness and startup only.
    grace: Option<LivenessGrace>,
    metrics: Arc<Metrics>,
    /// Pass/fail and reason of the previous result, to log changes once, not every check.
    last: Mutex<Option<(bool, String)>>,
}

/// A check started for a probe, to be finished (judged) by its deadline.
pub(crate) struct PendingCheck<'a> {
    check: &'a ProbeCheck,
    run: PendingRun,
    started: Instant,
    checked_at: SystemTime,
}

impl PendingCheck<'_> {
    /// Waits for the run, at most the check's timeout + [`RESPONSE_MARGIN`], and judges it.
    pub(crate) async fn finish(self) -> CheckReport {
        let check = self.check;
        let deadline = self.started + check.runner.timeout() + RESPONSE_MARGIN;
        let run = match timeout_at(deadline, self.run.wait()).await {
            Ok(Some(run)) => run,
            Ok(None) => Arc::new(no_run(
                CheckResult::Error,
                "internal error: the check task ended without a result".into(),
                self.started,
                self.checked_at,
            )),
            Err(_) => {
                tracing::warn!(probe = %check.kind, check = %check.name(), "check overran its timeout; answering without it");
                let secs = check.runner.timeout().as_secs();
                Arc::new(no_run(
                    CheckResult::Timeout,
                    format!("timed out after {secs}s"),
                    self.started,
                    self.checked_at,
                ))
            }
        };
        check.judge(&run)
    }
}

impl ProbeCheck {
    pub(crate) fn new(
        kind: ProbeKind,
        runner: Arc<CheckRunner>,
        grace: Option<LivenessGrace>,
        metrics: Arc<Metrics>,
    ) -> Arc<ProbeCheck> {
        Arc::new(ProbeCheck {
            kind,
            runner,
            grace,
            metrics,
            last: Mutex::new(None),
        })
    }

    pub(crate) fn kind(&self) -> ProbeKind {
        self.kind
    }

    pub(crate) fn name(&self) -> &CheckName {
        self.runner.name()
    }

    pub(crate) fn runner(&self) -> &Arc<CheckRunner> {
        &self.runner
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.runner.timeout()
    }

    /// True when this is the same check of the same probe under the same grace: a new set
    /// keeps it, with the log of its changes.
    pub(crate) fn takes(&self, runner: &Arc<CheckRunner>, grace: Option<LivenessGrace>) -> bool {
        Arc::ptr_eq(&self.runner, runner) && self.grace == grace
    }

    /// Starts the check (or joins its run in flight).
    pub(crate) fn start(&self) -> PendingCheck<'_> {
        PendingCheck {
            check: self,
            run: self.runner.start(),
            started: Instant::now(),
            checked_at: SystemTime::now(),
        }
    }

    /// Runs the check and judges it, within its timeout + [`RESPONSE_MARGIN`].
    pub(crate) async fn check(&self) -> CheckReport {
        self.start().finish().await
    }

    /// What `run` means for this probe; counted and logged.
    fn judge(&self, run: &CheckRun) -> CheckReport {
        let mut waiting = false;
        let outcome = match self.kind {
            ProbeKind::Startup => {
                let (outcome, wait) = self.judge_startup(run.outcome.clone());
                waiting = wait;
                outcome
            }
            kind => self.apply_grace(self.apply_domain_state(kind, run.outcome.clone())),
        };
        let report = CheckReport {
            name: self.name().clone(),
            handler: self.runner.handler(),
            result: outcome.result,
            reason: outcome.reason,
            duration: run.duration,
            checked_at: run.checked_at,
            exec: outcome.exec,
            background: None,
            reused_age: run.reused_age,
            waiting,
        };
        self.log_change(&report);
        self.metrics.record_check(
            self.kind,
            self.name(),
            report.handler,
            report.result,
            report.duration.as_secs_f64(),
        );
        report
    }

    /// Judges a check that did not reach the agent by the domain's state, where the backend
    /// knows it ([`domain_rules`]).
    fn apply_domain_state(&self, kind: ProbeKind, outcome: Outcome) -> Outcome {
        if !unreachable(&outcome) {
            return outcome;
        }
        let Some(state) = self.runner.agent().domain_state() else {
            return outcome;
        };
        let checked = outcome.reason.as_deref().unwrap_or("no answer");
        match domain_rules::judge(kind, &state) {
            Verdict::AsChecked => outcome,
            Verdict::Pass(why) => Outcome {
                result: CheckResult::Success,
                reason: Some(format!(
                    "{why}; the check did not reach the agent: {checked}"
                )),
                exec: None,
            },
            Verdict::Fail(why) => Outcome {
                result: CheckResult::Failure,
                reason: Some(why),
                exec: None,
            },
        }
    }

    /// Turns a liveness failure to reach an agent that never answered into a pass, within
    /// the grace window.
    fn apply_grace(&self, outcome: Outcome) -> Outcome {
        match self.grace_left(&outcome) {
            Some(left) => {
                tracing::debug!(
                    reason = outcome.reason.as_deref(),
                    "liveness passes under the grace"
                );
                Outcome {
                    result: CheckResult::Success,
                    reason: Some(format!("agent not reached yet (grace: {left}s left)")),
                    exec: None,
                }
            }
            None => outcome,
        }
    }

    /// The startup probe's reading: a check that could not reach the agent passes where the
    /// domain is migrating (the guest started already, elsewhere), and is not counted
    /// (`true`) while the domain is not there yet, or, where the backend cannot know the
    /// domain's state, while an agent that never answered is in its grace.
    fn judge_startup(&self, outcome: Outcome) -> (Outcome, bool) {
        if !unreachable(&outcome) {
            return (outcome, false);
        }
        let checked = outcome.reason.clone().unwrap_or_else(|| "no answer".into());
        if let Some(state) = self.runner.agent().domain_state() {
            match domain_rules::judge_startup(&state) {
                StartupVerdict::Started(why) => {
                    let outcome = Outcome {
                        result: CheckResult::Success,
                        reason: Some(format!(
                            "{why}; the check did not reach the agent: {checked}"
                        )),
                        exec: None,
                    };
                    return (outcome, false);
                }
                StartupVerdict::Waiting(why) => {
                    let outcome = Outcome {
                        reason: Some(format!("{checked} ({why}: not counted)")),
                        ..outcome
                    };
                    return (outcome, true);
                }
                StartupVerdict::Fail(why) => {
                    let outcome = Outcome {
                        result: CheckResult::Failure,
                        reason: Some(why),
                        exec: None,
                    };
                    return (outcome, false);
                }
                // The domain runs and its agent does not answer: a guest that is not up,
                // which is what the startup probe counts.
                StartupVerdict::AsChecked => return (outcome, false),
            }
        }
        // Where the domain's state is not known, a migration target's guest on its way
        // cannot be told from a booting one: the grace covers both.
        match self.grace_left(&outcome) {
            Some(left) => {
                let outcome = Outcome {
                    reason: Some(format!(
                        "{checked} (agent not reached yet, grace: {left}s left: not counted)"
                    )),
                    ..outcome
                };
                (outcome, true)
            }
            None => (outcome, false),
        }
    }

    /// Whole seconds of grace left, when `outcome` did not reach an agent that has never
    /// answered and the grace is running.
    fn grace_left(&self, outcome: &Outcome) -> Option<u64> {
        let grace = self.grace?;
        if !unreachable(outcome) || self.runner.agent().status().has_answered {
            return None;
        }
        let elapsed = grace.started.elapsed();
        (elapsed < grace.window).then(|| (grace.window - elapsed).as_secs_f64().ceil() as u64)
    }

    /// Logs a check's transitions under its probe (and its first result) at info, repeats
    /// at debug: kubelet checks every few seconds and a persistent failure must not flood
    /// the log.
    fn log_change(&self, report: &CheckReport) {
        let state = (report.passed(), report.reason_line());
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = last.as_ref() != Some(&state);
        *last = Some(state);
        drop(last);
        let exec = report.exec.as_ref();
        let stdout = exec.map(|e| String::from_utf8_lossy(&e.stdout.bytes).into_owned());
        let stderr = exec.map(|e| String::from_utf8_lossy(&e.stderr.bytes).into_owned());
        let exit_code = exec.and_then(|e| e.exit_code);
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    probe = %self.kind,
                    check = %report.name,
                    handler = report.handler,
                    result = report.result.as_str(),
                    reason = report.reason.as_deref(),
                    exit_code,
                    stdout = if report.passed() { None } else { stdout.as_deref() },
                    stderr = if report.passed() { None } else { stderr.as_deref() },
                    duration_ms = report.duration.as_millis() as u64,
                    "{}",
                    if report.passed() { "check passed" } else { "check failed" }
                )
            };
        }
        if changed {
            event!(tracing::Level::INFO);
        } else {
            event!(tracing::Level::DEBUG);
        }
    }
}

/// Runs `checks` together: every run is started before the first is waited for, so the
/// whole takes as long as the slowest, each within its own timeout; the reports in order.
pub(crate) async fn run_together<'a>(
    checks: impl IntoIterator<Item = &'a Arc<ProbeCheck>>,
) -> Vec<CheckReport> {
    let pending: Vec<PendingCheck<'_>> = checks.into_iter().map(|check| check.start()).collect();
    let mut reports = Vec::with_capacity(pending.len());
    for check in pending {
        reports.push(check.finish().await);
    }
    reports
}

/// True for an outcome that did not get an answer from the agent.
fn unreachable(outcome: &Outcome) -> bool {
    matches!(outcome.result, CheckResult::Error | CheckResult::Timeout)
}
