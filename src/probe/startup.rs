//! The startup probe (`startupProbe`): run by the gateway itself, in both modes, every
//! `periodSeconds` after `initialDelaySeconds`, until it first passes. Until then liveness
//! passes and readiness fails, both with the reason "starting"; after `failureThreshold`
//! failures in a row both fail, "did not start", and stay so (kubelet then kills the
//! launcher pod's compute container through liveness or its own startup probe on
//! `/started`, and KubeVirt starts the VM afresh). `/started` answers from this state.
//!
//! How it combines with the liveness grace (`livenessGraceSeconds`): the grace covers the
//! agent coming up (a booting guest, a migration target's guest still on its way); the
//! startup probe covers what runs in the guest coming up once the agent answers. A startup
//! check that cannot reach an agent that never answered is not counted while the grace
//! runs, nor while the domain is not there yet; a domain that is migrating counts as
//! started (docs/checks.md).
//!
//! The state outlives a reload (a reload is not a new VM): a started VM stays started, a
//! starting one keeps its count, and the loop goes on with the new checks.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::background::Schedule;
use super::gate::Gate;
use super::judge::{ProbeCheck, run_together};
use super::report::{Held, ProbeReport, Standing};
use crate::config::ProbeKind;
use crate::metrics::Metrics;

/// Where the startup probe stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StartupState {
    /// Not passed yet: `failures` counted in a row, the latest run, and when the next is
    /// due.
    Starting {
        failures: u32,
        latest: Option<Arc<ProbeReport>>,
        next_due: Instant,
        failure_threshold: u32,
    },
    /// Passed (or there is no startup probe). For good: a VM that started once is not
    /// starting again until it is a new VM, with a new gateway.
    Started { latest: Option<Arc<ProbeReport>> },
    /// Failed `failureThreshold` times in a row; for good, like kubelet's verdict.
    DidNotStart {
        failures: u32,
        latest: Arc<ProbeReport>,
    },
}

/// The startup probe's state and the loop that moves it. One per gateway, carried from one
/// set of probes to the next.
pub(crate) struct Startup {
    state: Arc<watch::Sender<StartupState>>,
    /// True once started: what readiness and liveness loops wait for.
    started: Arc<watch::Sender<bool>>,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl Drop for Startup {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Startup {
    /// Started already: a gateway without a startup probe.
    pub(crate) fn started(metrics: Arc<Metrics>) -> Arc<Startup> {
        metrics.record_startup("started");
        Arc::new(Startup {
            state: Arc::new(watch::Sender::new(StartupState::Started { latest: None })),
            started: Arc::new(watch::Sender::new(true)),
            task: Mutex::new(None),
            metrics,
        })
    }

    /// Starting: runs `checks` on `schedule` while `gate` is open, until the probe passes
    /// or has failed `failureThreshold` times in a row. Must run on a tokio runtime.
    pub(crate) fn start(
        checks: Vec<Arc<ProbeCheck>>,
        schedule: Schedule,
        gate: Gate,
        metrics: Arc<Metrics>,
    ) -> Arc<Startup> {
        metrics.record_startup("starting");
        let next_due = Instant::now() + seconds(schedule.initial_delay_seconds);
        let startup = Arc::new(Startup {
            state: Arc::new(watch::Sender::new(StartupState::Starting {
                failures: 0,
                latest: None,
                next_due,
                failure_threshold: schedule.failure_threshold,
            })),
            started: Arc::new(watch::Sender::new(false)),
            task: Mutex::new(None),
            metrics,
        });
        startup.run(checks, schedule, gate, next_due);
        startup
    }

    /// Goes on under a new set of probes: with its `checks` (none: the new config has no
    /// startup probe, so the VM counts as started), keeping the state.
    pub(crate) fn follow(&self, checks: Option<(Vec<Arc<ProbeCheck>>, Schedule)>, gate: Gate) {
        let state = self.state.borrow().clone();
        match (state, checks) {
            (StartupState::Starting { latest, .. }, None) => {
                self.stop();
                self.finish(StartupState::Started { latest }, "started");
            }
            (StartupState::Starting { next_due, .. }, Some((checks, schedule))) => {
                self.stop();
                self.state.send_modify(|state| {
                    if let StartupState::Starting {
                        failure_threshold, ..
                    } = state
                    {
                        *failure_threshold = schedule.failure_threshold;
                    }
                });
                self.run(checks, schedule, gate, next_due);
            }
            // Started or did not start: settled.
            _ => {}
        }
    }

    /// The state now.
    pub(crate) fn state(&self) -> StartupState {
        self.state.borrow().clone()
    }

    /// Follows the start: true once started.
    pub(crate) fn started_watch(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }

    /// The answer readiness and liveness give while the startup probe holds them, or
    /// `None` once started.
    pub(crate) fn held(&self, kind: ProbeKind) -> Option<Held> {
        match &*self.state.borrow() {
            StartupState::Started { .. } => None,
            starting @ StartupState::Starting { .. } => Some(Held {
                standing: Standing::Starting,
                passed: kind == ProbeKind::Liveness,
                reason: starting_reason(starting),
            }),
            settled @ StartupState::DidNotStart { .. } => Some(Held {
                standing: Standing::DidNotStart,
                passed: false,
                reason: starting_reason(settled),
            }),
        }
    }

    fn run(&self, checks: Vec<Arc<ProbeCheck>>, schedule: Schedule, gate: Gate, due: Instant) {
        let task = tokio::spawn(run_loop(
            Arc::clone(&self.state),
            Arc::clone(&self.started),
            Arc::clone(&self.metrics),
            checks,
            schedule,
            gate,
            due,
        ));
        if let Some(old) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(task)
        {
            old.abort();
        }
    }

    fn stop(&self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }

    fn finish(&self, state: StartupState, label: &'static str) {
        settle(&self.state, &self.started, &self.metrics, state, label);
    }
}

/// Sets a final state (started, or did not start) and tells the loops waiting for it.
fn settle(
    state: &watch::Sender<StartupState>,
    started: &watch::Sender<bool>,
    metrics: &Metrics,
    settled: StartupState,
    label: &'static str,
) {
    let is_started = matches!(settled, StartupState::Started { .. });
    state.send_replace(settled);
    metrics.record_startup(label);
    if is_started {
        started.send_replace(true);
    }
}

/// The reason readiness and liveness give while held, and `/started` while not started.
pub(crate) fn starting_reason(state: &StartupState) -> String {
    match state {
        StartupState::Started { .. } => "started".into(),
        StartupState::Starting {
            failures,
            latest,
            next_due,
            failure_threshold,
        } => match latest {
            None => match next_due.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => format!(
                    "starting: the startup probe's first check is due in {:.1}s",
                    wait.as_secs_f64()
                ),
                _ => "starting: the startup probe's first check is under way".to_string(),
            },
            Some(latest) => format!(
                "starting: {} (failure {failures} of failureThreshold {failure_threshold})",
                latest.reason_line()
            ),
        },
        StartupState::DidNotStart { failures, latest } => format!(
            "did not start: the startup probe failed {failures} times in a row: {}",
            latest.reason_line()
        ),
    }
}

fn seconds(count: u32) -> Duration {
    Duration::from_secs(u64::from(count))
}

/// Runs the startup checks together every `periodSeconds` from `due`, while the gate is
/// open, until the probe settles.
async fn run_loop(
    state: Arc<watch::Sender<StartupState>>,
    started: Arc<watch::Sender<bool>>,
    metrics: Arc<Metrics>,
    checks: Vec<Arc<ProbeCheck>>,
    schedule: Schedule,
    mut gate: Gate,
    mut due: Instant,
) {
    loop {
        sleep_until(due).await;
        gate.wait_open().await;
        let begun = Instant::now();
        let checked_at = SystemTime::now();
        let report = Arc::new(ProbeReport {
            probe: ProbeKind::Startup,
            checks: run_together(&checks).await,
            held: None,
            duration: begun.elapsed(),
            checked_at,
        });
        due = begun + seconds(schedule.period_seconds);
        if report.passed() {
            tracing::info!(
                reason = report.reason().as_deref(),
                "started: the startup probe passed"
            );
            let latest = Some(report);
            settle(
                &state,
                &started,
                &metrics,
                StartupState::Started { latest },
                "started",
            );
            return;
        }
        // Failures of checks that could not reach an agent still coming up are not counted.
        let counted = report
            .checks
            .iter()
            .any(|check| !check.passed() && !check.waiting);
        let failures = match &*state.borrow() {
            StartupState::Starting { failures, .. } => *failures + u32::from(counted),
            _ => return,
        };
        if failures >= schedule.failure_threshold {
            tracing::warn!(
                failures,
                reason = %report.reason_line(),
                "did not start: the startup probe reached its failureThreshold"
            );
            let settled = StartupState::DidNotStart {
                failures,
                latest: report,
            };
            settle(&state, &started, &metrics, settled, "did_not_start");
            return;
        }
        tracing::debug!(failures, counted, reason = %report.reason_line(), "still starting");
        state.send_replace(StartupState::Starting {
            failures,
            latest: Some(report),
            next_due: due,
            failure_threshold: schedule.failure_threshold,
        });
    }
}
