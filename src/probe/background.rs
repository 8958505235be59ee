//! Background mode (`mode: background`): the gateway runs each check of each probe on the
//! probe's schedule, as kubelet would (every `periodSeconds` after `initialDelaySeconds`),
//! applies `successThreshold` and `failureThreshold` to each check the way kubelet does to
//! a probe, and `/ready` and `/live` answer at once from the current states: a probe
//! passes while every check it asks about does, so excluding a check (`?exclude=`) or
//! asking for one (`/ready/<name>`) reads the same states.
//!
//! A loop that stops producing results (wedged, or its task gone) must never keep
//! reporting its last success: a state whose due result is overdue by more than the
//! check's timeout plus [`STALE_MARGIN`] reads as a failure with reason `stale`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::gate::Gate;
use super::judge::ProbeCheck;
use super::report::{BackgroundView, CheckReport, CheckResult};
use crate::config::{CheckName, ProbeKind, ProbeSpec};

/// How late a due result may be, beyond the check's own timeout, before it is stale. The
/// check itself is bounded by its timeout; this covers scheduling on a busy node.
pub(crate) const STALE_MARGIN: Duration = Duration::from_secs(1);

/// Kubelet's result arithmetic for one probe. Kubelet starts readiness as failing and
/// liveness as passing; a result flips the state only after `threshold` equal results in
/// a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThresholdState {
    pub passing: bool,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub last_transition_at: Option<SystemTime>,
}

impl ThresholdState {
    pub(crate) fn initial(kind: ProbeKind) -> ThresholdState {
        ThresholdState {
            passing: kind == ProbeKind::Liveness,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last_transition_at: None,
        }
    }

    /// Counts one result; returns true when the state flipped.
    pub(crate) fn record(
        &mut self,
        passed: bool,
        at: SystemTime,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> bool {
        if passed {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
        }
        let flip = if self.passing {
            !passed && self.consecutive_failures >= failure_threshold
        } else {
            passed && self.consecutive_successes >= success_threshold
        };
        if flip {
            self.passing = !self.passing;
            self.last_transition_at = Some(at);
        }
        flip
    }
}

/// The state of one check's loop: what the loop writes and the readers read.
struct LoopState {
    state: ThresholdState,
    last: Option<CheckReport>,
    /// When the result the loop works towards was due: the start of the check in flight,
    /// or of the next one. Moves only when a result arrives, or when the loop's gate opens
    /// (nothing is due while it is closed).
    due: Instant,
    /// What the schedule counts from: the start of the latest check (in flight or done),
    /// or before the first one the start of the loop (`initialDelaySeconds` counts from
    /// there).
    anchor: Anchor,
}

#[derive(Debug, Clone, Copy)]
enum Anchor {
    Started(Instant),
    Checked(Instant),
}

impl Anchor {
    /// When the next check is due under `schedule` (never before now).
    fn next_due(self, schedule: &Schedule) -> Instant {
        let due = match self {
            Anchor::Started(at) => at + seconds(schedule.initial_delay_seconds),
            Anchor::Checked(at) => at + seconds(schedule.period_seconds),
        };
        due.max(Instant::now())
    }
}

fn seconds(count: u32) -> Duration {
    Duration::from_secs(u64::from(count))
}

/// A probe's schedule and thresholds, which each of its checks' loops follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Schedule {
    pub(crate) fn of(spec: &ProbeSpec) -> Schedule {
        Schedule {
            initial_delay_seconds: spec.initial_delay_seconds,
            period_seconds: spec.period_seconds,
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
        }
    }
}

/// One check of one probe run by the gateway's own loop, with its own threshold state: a
/// probe passes while each of its checks does. Dropping it stops the loop.
pub(crate) struct BackgroundCheck {
    /// Runs and judges the check.
    check: Arc<ProbeCheck>,
    schedule: Schedule,
    shared: Arc<Mutex<LoopState>>,
    task: JoinHandle<()>,
}

impl Drop for BackgroundCheck {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BackgroundCheck {
    /// Starts the loop of `check` in kubelet's initial state. Checks run only while `gate`
    /// is open. Must run on a tokio runtime.
    pub(crate) fn start(check: Arc<ProbeCheck>, schedule: Schedule, gate: Gate) -> Self {
        let anchor = Anchor::Started(Instant::now());
        let shared = LoopState {
            state: ThresholdState::initial(check.kind()),
            last: None,
            due: anchor.next_due(&schedule),
            anchor,
        };
        BackgroundCheck::spawn(check, schedule, shared, gate)
    }

    /// Starts the loop of `check` where `previous` (the same check of the same probe
    /// before a reload) left off: its counts, its state and its latest result stay, and the
    /// next check is due on the new schedule counted from the previous one, so a reload
    /// neither resets readiness to failing nor waits `initialDelaySeconds` again.
    pub(crate) fn resume(
        previous: &BackgroundCheck,
        check: Arc<ProbeCheck>,
        schedule: Schedule,
        gate: Gate,
    ) -> Self {
        let shared = {
            let old = previous
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            LoopState {
                state: old.state.clone(),
                last: old.last.clone(),
                due: old.anchor.next_due(&schedule),
                anchor: old.anchor,
            }
        };
        BackgroundCheck::spawn(check, schedule, shared, gate)
    }

    fn spawn(check: Arc<ProbeCheck>, schedule: Schedule, shared: LoopState, gate: Gate) -> Self {
        let shared = Arc::new(Mutex::new(shared));
        let task = tokio::spawn(run_loop(
            Arc::clone(&check),
            schedule,
            Arc::clone(&shared),
            gate,
        ));
        BackgroundCheck {
            check,
            schedule,
            shared,
            task,
        }
    }

    pub(crate) fn kind(&self) -> ProbeKind {
        self.check.kind()
    }

    pub(crate) fn name(&self) -> &CheckName {
        self.check.name()
    }

    /// The check the loop runs.
    pub(crate) fn check(&self) -> &Arc<ProbeCheck> {
        &self.check
    }

    pub(crate) fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The check's current state as a report: the latest run's details, the verdict of
    /// the thresholds, and why the two differ when they do.
    pub(crate) fn report(&self) -> CheckReport {
        let now = Instant::now();
        let schedule = &self.schedule;
        let timeout = self.check.timeout();
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let overdue = now.saturating_duration_since(shared.due);
        let stale = overdue > timeout + STALE_MARGIN;
        let mut report = match &shared.last {
            Some(last) => last.clone(),
            None => self.no_result_yet(shared.state.passing),
        };
        let last_passed = shared
            .last
            .as_ref()
            .map(|last| last.result == CheckResult::Success);
        let state = &shared.state;
        report.reason = if stale {
            report.result = CheckResult::Failure;
            Some(format!(
                "stale: the check due {:.1}s ago has not reported (timeoutSeconds {}); the \
                 gateway's check loop is stuck",
                overdue.as_secs_f64(),
                timeout.as_secs()
            ))
        } else {
            match (last_passed, state.passing) {
                (None, _) => Some(format!(
                    "no result yet: the first check is due in {:.1}s (initialDelaySeconds {})",
                    shared.due.saturating_duration_since(now).as_secs_f64(),
                    schedule.initial_delay_seconds
                )),
                (Some(false), true) => Some(format!(
                    "{} (failure {} of failureThreshold {}: still passing)",
                    report.reason_line(),
                    state.consecutive_failures,
                    schedule.failure_threshold
                )),
                (Some(true), false) => Some(format!(
                    "passed {} of successThreshold {} times in a row: still failing",
                    state.consecutive_successes, schedule.success_threshold
                )),
                _ => report.reason.take(),
            }
        };
        report.background = Some(BackgroundView {
            passing: state.passing && !stale,
            consecutive_successes: state.consecutive_successes,
            consecutive_failures: state.consecutive_failures,
            last_checked_at: shared.last.as_ref().map(|last| last.checked_at),
            last_transition_at: state.last_transition_at,
        });
        report
    }

    /// The report before the first result: kubelet's initial state.
    fn no_result_yet(&self, passing: bool) -> CheckReport {
        CheckReport {
            name: self.check.name().clone(),
            handler: self.check.runner().handler(),
            result: if passing {
                CheckResult::Success
            } else {
                CheckResult::Failure
            },
            reason: None,
            duration: Duration::ZERO,
            checked_at: SystemTime::now(),
            exec: None,
            background: None,
            reused_age: None,
            waiting: false,
        }
    }
}

/// Runs the check every `periodSeconds` (measured from the start of the previous one; a
/// check that overruns the period is followed at once), after `initialDelaySeconds`, while
/// the gate is open. A check due while it is closed runs once it opens.
async fn run_loop(
    check: Arc<ProbeCheck>,
    schedule: Schedule,
    shared: Arc<Mutex<LoopState>>,
    mut gate: Gate,
) {
    let mut due = shared.lock().unwrap_or_else(PoisonError::into_inner).due;
    loop {
        sleep_until(due).await;
        if gate.wait_open().await {
            // Nothing was due while the gate was closed: the result is due from now.
            shared.lock().unwrap_or_else(PoisonError::into_inner).due = Instant::now();
        }
        let started = Instant::now();
        // A loop that takes over now (a reload) counts its schedule from this check, and
        // does not start a second one beside it.
        shared.lock().unwrap_or_else(PoisonError::into_inner).anchor = Anchor::Checked(started);
        // The run has its own task (single flight): stopping this loop (a reload replaced
        // the checks) never cancels a run midway and loses track of its guest process.
        let report = check.check().await;
        due = Anchor::Checked(started).next_due(&schedule);
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let flipped = shared.state.record(
            report.result == CheckResult::Success,
            report.checked_at,
            schedule.success_threshold,
            schedule.failure_threshold,
        );
        if flipped {
            tracing::info!(
                probe = %check.kind(),
                check = %check.name(),
                passing = shared.state.passing,
                reason = report.reason.as_deref(),
                "{}",
                if shared.state.passing {
                    "background check state: passing"
                } else {
                    "background check state: failing"
                }
            );
        }
        shared.last = Some(report);
        shared.due = due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn run(kind: ProbeKind, results: &[bool], success: u32, failure: u32) -> Vec<bool> {
        let mut state = ThresholdState::initial(kind);
        results
            .iter()
            .map(|&passed| {
                state.record(passed, T0, success, failure);
                state.passing
            })
            .collect()
    }

    #[test]
    fn readiness_starts_failing_and_liveness_passing() {
        assert!(!ThresholdState::initial(ProbeKind::Readiness).passing);
        assert!(ThresholdState::initial(ProbeKind::Liveness).passing);
    }

    #[test]
    fn failures_flip_only_at_the_failure_threshold_and_a_success_resets_the_count() {
        let t = true;
        let f = false;
        assert_eq!(
            run(ProbeKind::Liveness, &[f, f, t, f, f, f, t], 1, 3),
            [t, t, t, t, t, f, t]
        );
    }

    #[test]
    fn successes_flip_only_at_the_success_threshold() {
        let t = true;
        let f = false;
        assert_eq!(
            run(ProbeKind::Readiness, &[t, f, t, t, f, f], 2, 2),
            [f, f, f, t, t, f]
        );
    }

    mod with_paused_time {
        use super::*;
        use crate::agent::GuestAgent;
        use crate::config::{CheckSpec, Handler};
        use crate::metrics::Metrics;
        use crate::probe::gate::never_paused;
        use crate::probe::runner::CheckRunner;
        use crate::probe::scripted_agent::ScriptedAgent;

        const TIMEOUT: Duration = Duration::from_secs(1);

        fn schedule(initial_delay: u32, success: u32, failure: u32) -> Schedule {
            Schedule {
                initial_delay_seconds: initial_delay,
                period_seconds: 10,
                success_threshold: success,
                failure_threshold: failure,
            }
        }

        /// The probe's own check (a guestAgentPing) against a scripted agent.
        fn check(kind: ProbeKind, script: &[bool]) -> Arc<ProbeCheck> {
            let metrics = Arc::new(Metrics::new());
            let agent = GuestAgent::spawn(ScriptedAgent::new(script), 1024, Arc::clone(&metrics));
            let spec = CheckSpec {
                name: CheckName::of_probe(kind),
                handler: Handler::GuestAgentPing,
                timeout: TIMEOUT,
            };
            let runner = CheckRunner::new(spec, agent, Duration::ZERO);
            ProbeCheck::new(kind, runner, None, metrics)
        }

        /// A gate that is always open: no pause, started.
        fn open() -> Gate {
            Gate::pause_only(never_paused())
        }

        fn looped(kind: ProbeKind, schedule: Schedule, script: &[bool]) -> BackgroundCheck {
            BackgroundCheck::start(check(kind, script), schedule, open())
        }

        /// The verdict at each period, sampled halfway between checks.
        async fn verdicts(looped: &BackgroundCheck, initial_delay: u64, count: usize) -> Vec<bool> {
            tokio::time::sleep(Duration::from_secs(initial_delay) + Duration::from_secs(5)).await;
            let mut seen = Vec::new();
            for _ in 0..count {
                seen.push(looped.report().passed());
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            seen
        }

        #[tokio::test(start_paused = true)]
        async fn readiness_waits_for_its_initial_delay_then_follows_the_thresholds() {
            let looped = looped(
                ProbeKind::Readiness,
                schedule(30, 2, 2),
                &[true, true, false, true, false, false, true],
            );
            tokio::time::sleep(Duration::from_secs(29)).await;
            let before = looped.report();
            assert!(!before.passed(), "readiness starts failing");
            assert!(
                before
                    .reason
                    .as_deref()
                    .unwrap()
                    .starts_with("no result yet"),
                "{before:?}"
            );
            let (t, f) = (true, false);
            assert_eq!(verdicts(&looped, 1, 7).await, [f, t, t, t, t, f, f]);
        }

        #[tokio::test(start_paused = true)]
        async fn liveness_starts_passing_and_fails_at_the_failure_threshold() {
            let looped = looped(
                ProbeKind::Liveness,
                schedule(0, 1, 3),
                &[false, false, false, true],
            );
            let (t, f) = (true, false);
            assert_eq!(verdicts(&looped, 0, 4).await, [t, t, f, t]);
        }

        #[tokio::test(start_paused = true)]
        async fn the_report_counts_results_and_says_a_failure_is_not_yet_counted_against_it() {
            let looped = looped(ProbeKind::Liveness, schedule(0, 1, 3), &[true, false]);
            tokio::time::sleep(Duration::from_secs(15)).await;
            let report = looped.report();
            assert!(report.passed());
            let view = report.background.clone().unwrap();
            assert_eq!(
                (view.consecutive_successes, view.consecutive_failures),
                (0, 1)
            );
            assert!(view.last_checked_at.is_some());
            assert_eq!(view.last_transition_at, None, "never flipped");
            assert!(
                report
                    .reason
                    .as_deref()
                    .unwrap()
                    .ends_with("(failure 1 of failureThreshold 3: still passing)"),
                "{report:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_resumed_loop_keeps_its_state_and_its_schedule() {
            let first = schedule(30, 1, 3);
            let looped = looped(ProbeKind::Readiness, first, &[true; 3]);
            tokio::time::sleep(Duration::from_secs(35)).await;
            assert!(looped.report().passed(), "the check at 30 s passed");
            let changed = Schedule {
                failure_threshold: 5,
                ..first
            };
            let resumed = BackgroundCheck::resume(
                &looped,
                check(ProbeKind::Readiness, &[true; 3]),
                changed,
                open(),
            );
            drop(looped);
            let count = |looped: &BackgroundCheck| {
                let report = looped.report();
                (
                    report.passed(),
                    report.background.clone().unwrap().consecutive_successes,
                )
            };
            assert_eq!(count(&resumed), (true, 1), "not reset to failing");
            // Due at 40 s (the last check at 30 s + periodSeconds): not at once, and not
            // after another initialDelaySeconds.
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert_eq!(count(&resumed), (true, 1), "no check before it is due");
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(count(&resumed), (true, 2));
        }

        #[tokio::test(start_paused = true)]
        async fn a_loop_that_stops_reporting_goes_stale_and_fails() {
            let looped = looped(ProbeKind::Liveness, schedule(0, 1, 3), &[true; 4]);
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(looped.report().passed());
            // Wedge the loop: the result due at 10 s never comes.
            looped.task.abort();
            tokio::time::sleep(Duration::from_secs(5) + TIMEOUT + STALE_MARGIN / 2).await;
            assert!(
                looped.report().passed(),
                "not overdue beyond the margin yet"
            );
            tokio::time::sleep(STALE_MARGIN).await;
            let report = looped.report();
            assert!(!report.passed());
            assert!(
                report.reason.as_deref().unwrap().starts_with("stale:"),
                "{report:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_closed_gate_holds_the_loop_and_nothing_is_stale_when_it_opens() {
            let (pause, paused) = tokio::sync::watch::channel(Some(crate::probe::Pause {
                annotation: "test",
                note: None,
            }));
            let looped = BackgroundCheck::start(
                check(ProbeKind::Readiness, &[true; 2]),
                schedule(0, 1, 3),
                Gate::pause_only(paused),
            );
            tokio::time::sleep(Duration::from_secs(60)).await;
            let report = looped.report();
            assert_eq!(
                report.background.unwrap().last_checked_at,
                None,
                "no check while paused"
            );
            pause.send_replace(None);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let report = looped.report();
            assert!(
                report.passed(),
                "checked as soon as the gate opened: {report:?}"
            );
            assert!(!report.reason.unwrap_or_default().starts_with("stale"));
        }
    }

    #[test]
    fn a_transition_is_recorded_with_its_time() {
        let mut state = ThresholdState::initial(ProbeKind::Readiness);
        let at = T0 + Duration::from_secs(5);
        assert!(state.record(true, at, 1, 3));
        assert_eq!(state.last_transition_at, Some(at));
        assert!(!state.record(true, T0, 1, 3));
        assert_eq!(state.last_transition_at, Some(at));
    }
}
