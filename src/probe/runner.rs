//! [`ProbeRunner`]: one configured probe, with single flight and the liveness grace.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::domain_rules::{self, Verdict};
use super::handlers::{self, Outcome};
use super::report::{CheckResult, ProbeReport};
use crate::agent::GuestAgent;
use crate::config::{Handler, ProbeKind, ProbeSpec};
use crate::metrics::Metrics;

/// The window after start-up in which a liveness check that cannot reach the agent
/// passes: a booting guest, or a migration target whose guest has not arrived yet, is
/// not a dead one. It ends early once the agent has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LivenessGrace {
    pub started: Instant,
    pub window: Duration,
}

type Flight = watch::Receiver<Option<Arc<ProbeReport>>>;

/// Runs one probe's check. Concurrent callers share the check in flight, so a burst of
/// requests costs the guest one command, not one each.
pub(crate) struct ProbeRunner {
    kind: ProbeKind,
    spec: ProbeSpec,
    agent: GuestAgent,
    grace: Option<LivenessGrace>,
    metrics: Arc<Metrics>,
    flight: Mutex<Option<Flight>>,
    /// `minIntervalSeconds`: a result younger than this is reused by [`ProbeRunner::check`].
    min_interval: Duration,
    /// The latest result of [`ProbeRunner::check`] and when it arrived.
    latest: Mutex<Option<(Instant, Arc<ProbeReport>)>>,
    /// Pass/fail and reason of the previous check, to log changes once, not every check.
    last: Mutex<Option<(bool, String)>>,
}

/// Empties a runner's flight slot when the check task ends, however it ends, unless a
/// newer flight has taken the slot meanwhile.
struct FlightLanding {
    runner: Arc<ProbeRunner>,
    flight: Flight,
}

impl Drop for FlightLanding {
    fn drop(&mut self) {
        let mut slot = self
            .runner
            .flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|f| f.same_channel(&self.flight)) {
            *slot = None;
        }
    }
}

impl ProbeRunner {
    pub(crate) fn new(
        kind: ProbeKind,
        spec: ProbeSpec,
        agent: GuestAgent,
        grace: Option<LivenessGrace>,
        min_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<ProbeRunner> {
        Arc::new(ProbeRunner {
            kind,
            spec,
            agent,
            grace,
            metrics,
            flight: Mutex::new(None),
            min_interval,
            latest: Mutex::new(None),
            last: Mutex::new(None),
        })
    }

    pub(crate) fn kind(&self) -> ProbeKind {
        self.kind
    }

    pub(crate) fn handler(&self) -> &'static str {
        self.spec.handler.name()
    }

    pub(crate) fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.spec.timeout
    }

    /// True when this runner runs exactly the check these settings describe (on the same
    /// agent), so a new set of checks can keep it, with its check in flight and its
    /// latest result.
    pub(crate) fn runs(
        &self,
        spec: &ProbeSpec,
        min_interval: Duration,
        grace: Option<LivenessGrace>,
    ) -> bool {
        self.spec == *spec && self.min_interval == min_interval && self.grace == grace
    }

    /// Runs the check, or joins the one in flight. The check runs in its own task: a
    /// caller that goes away (a client hanging up) neither cancels it for the others nor
    /// leaves a guest process untracked.
    ///
    /// With `minIntervalSeconds`, a result younger than that is answered again (marked
    /// with its age) instead of starting a process in the guest per request.
    pub(crate) async fn check(self: &Arc<Self>) -> Arc<ProbeReport> {
        if let Some(reused) = self.recent() {
            return reused;
        }
        let mut flight = self.join_or_start();
        let started = Instant::now();
        match flight.wait_for(Option::is_some).await {
            Ok(report) => match report.as_ref() {
                Some(report) => Arc::clone(report),
                None => Arc::new(self.internal_error(started)),
            },
            Err(_) => Arc::new(self.internal_error(started)),
        }
    }

    fn recent(&self) -> Option<Arc<ProbeReport>> {
        if self.min_interval.is_zero() {
            return None;
        }
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, report) = latest.as_ref()?;
        let age = at.elapsed();
        (age < self.min_interval).then(|| {
            Arc::new(ProbeReport {
                reused_age: Some(age),
                ..ProbeReport::clone(report)
            })
        })
    }

    fn join_or_start(self: &Arc<Self>) -> Flight {
        let mut slot = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = slot.as_ref() {
            return flight.clone();
        }
        let (publish, flight) = watch::channel(None);
        *slot = Some(flight.clone());
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Cleared on every exit, a panic included: a dead flight must not be joined.
            let _landing = FlightLanding {
                runner: Arc::clone(&this),
                flight: publish.subscribe(),
            };
            let report = Arc::new(this.run().await);
            if !this.min_interval.is_zero() {
                *this.latest.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), Arc::clone(&report)));
            }
            // Later callers start a new check; those waiting get this one.
            *this.flight.lock().unwrap_or_else(PoisonError::into_inner) = None;
            let _ = publish.send(Some(report));
        });
        flight
    }

    /// Runs the check once, now, without single flight.
    pub(crate) async fn run(&self) -> ProbeReport {
        let checked_at = SystemTime::now();
        let started = Instant::now();
        let deadline = started + self.spec.timeout;
        let outcome = match &self.spec.handler {
            Handler::GuestAgentPing => {
                handlers::ping(&self.agent, self.spec.timeout, deadline).await
            }
            Handler::Exec(command) => {
                handlers::exec(&self.agent, self.kind, command, self.spec.timeout, deadline).await
            }
        };
        let outcome = self.apply_grace(self.apply_domain_state(outcome));
        let report = ProbeReport {
            probe: self.kind,
            handler: self.handler(),
            result: outcome.result,
            reason: outcome.reason,
            duration: started.elapsed(),
            checked_at,
            exec: outcome.exec,
            background: None,
            reused_age: None,
        };
        self.log_change(&report);
        self.metrics.record_check(
            self.kind,
            report.handler,
            report.result,
            report.duration.as_secs_f64(),
        );
        report
    }

    /// Judges a check that did not reach the agent by the domain's state, where the backend
    /// knows it ([`domain_rules`]).
    fn apply_domain_state(&self, outcome: Outcome) -> Outcome {
        if !matches!(outcome.result, CheckResult::Error | CheckResult::Timeout) {
            return outcome;
        }
        let Some(state) = self.agent.domain_state() else {
            return outcome;
        };
        let checked = outcome.reason.as_deref().unwrap_or("no answer");
        match domain_rules::judge(self.kind, &state) {
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
        let Some(grace) = self.grace else {
            return outcome;
        };
        let unreachable = matches!(outcome.result, CheckResult::Error | CheckResult::Timeout);
        if !unreachable || self.agent.status().has_answered {
            return outcome;
        }
        let elapsed = grace.started.elapsed();
        if elapsed >= grace.window {
            return outcome;
        }
        let left = (grace.window - elapsed).as_secs_f64().ceil() as u64;
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

    /// Logs a probe's transitions (and its first result) at info, repeats at debug: kubelet
    /// checks every few seconds and a persistent failure must not flood the log.
    fn log_change(&self, report: &ProbeReport) {
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
                    probe = %report.probe,
                    handler = report.handler,
                    result = report.result.as_str(),
                    reason = report.reason.as_deref(),
                    exit_code,
                    stdout = if report.passed() { None } else { stdout.as_deref() },
                    stderr = if report.passed() { None } else { stderr.as_deref() },
                    duration_ms = report.duration.as_millis() as u64,
                    "{}",
                    if report.passed() { "probe passed" } else { "probe failed" }
                )
            };
        }
        if changed {
            event!(tracing::Level::INFO);
        } else {
            event!(tracing::Level::DEBUG);
        }
    }

    fn internal_error(&self, started: Instant) -> ProbeReport {
        ProbeReport {
            probe: self.kind,
            handler: self.handler(),
            result: CheckResult::Error,
            reason: Some("internal error: the check task ended without a result".into()),
            duration: started.elapsed(),
            checked_at: SystemTime::now(),
            exec: None,
            background: None,
            reused_age: None,
        }
    }
}
