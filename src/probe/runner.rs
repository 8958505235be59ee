//! [`CheckRunner`]: one check, run through the agent, with single flight and result reuse.
//! A check listed by several probes has one runner: what it found is the same whichever
//! probe asked, and the guest runs it once for all of them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::handlers::{self, Outcome};
use super::report::CheckResult;
use crate::agent::GuestAgent;
use crate::config::{CheckName, CheckSpec, Handler};

/// What one run of a check found, before a probe judges it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CheckRun {
    pub outcome: Outcome,
    pub duration: Duration,
    pub checked_at: SystemTime,
    /// With `minIntervalSeconds`: this run was reused, at this age.
    pub reused_age: Option<Duration>,
}

type Flight = watch::Receiver<Option<Arc<CheckRun>>>;

/// Runs one check. Concurrent callers share the run in flight, so a burst of requests (or
/// two probes listing the check) costs the guest one command, not one each.
pub(super) struct CheckRunner {
    spec: CheckSpec,
    agent: GuestAgent,
    flight: Mutex<Option<Flight>>,
    /// `minIntervalSeconds`: a run younger than this is reused by [`CheckRunner::start`].
    min_interval: Duration,
    /// The latest run and when it ended.
    latest: Mutex<Option<(Instant, Arc<CheckRun>)>>,
}

/// Empties a runner's flight slot when the run's task ends, however it ends, unless a
/// newer flight has taken the slot meanwhile.
struct FlightLanding {
    runner: Arc<CheckRunner>,
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

/// A run started (or reused), to be waited for: starting every check of a probe first and
/// then waiting for each runs them together without a task per check.
pub(super) enum PendingRun {
    Reused(Arc<CheckRun>),
    InFlight(Flight),
}

impl PendingRun {
    /// The run's result. `None` only if its task ended without one (a bug, reported by the
    /// caller as an internal error).
    pub(super) async fn wait(self) -> Option<Arc<CheckRun>> {
        match self {
            PendingRun::Reused(run) => Some(run),
            PendingRun::InFlight(mut flight) => match flight.wait_for(Option::is_some).await {
                Ok(run) => run.as_ref().map(Arc::clone),
                Err(_) => None,
            },
        }
    }
}

impl CheckRunner {
    pub(super) fn new(spec: CheckSpec, agent: GuestAgent, min_interval: Duration) -> Arc<Self> {
        Arc::new(CheckRunner {
            spec,
            agent,
            flight: Mutex::new(None),
            min_interval,
            latest: Mutex::new(None),
        })
    }

    pub(super) fn spec(&self) -> &CheckSpec {
        &self.spec
    }

    pub(super) fn name(&self) -> &CheckName {
        &self.spec.name
    }

    pub(super) fn handler(&self) -> &'static str {
        self.spec.handler.name()
    }

    pub(super) fn timeout(&self) -> Duration {
        self.spec.timeout
    }

    /// The agent the check runs through (the probes read the domain's state from it).
    pub(super) fn agent(&self) -> &GuestAgent {
        &self.agent
    }

    /// True when this runner runs exactly this check (on the same agent), so a new set of
    /// checks can keep it, with its run in flight and its latest result.
    pub(super) fn runs(&self, spec: &CheckSpec, min_interval: Duration) -> bool {
        self.spec == *spec && self.min_interval == min_interval
    }

    /// Starts a run, or joins the one in flight. The run has its own task: a caller that
    /// goes away (a client hanging up) neither cancels it for the others nor leaves a
    /// guest process untracked.
    ///
    /// With `minIntervalSeconds`, a run younger than that is answered again (marked with
    /// its age) instead of starting a process in the guest per request.
    pub(super) fn start(self: &Arc<Self>) -> PendingRun {
        match self.recent() {
            Some(reused) => PendingRun::Reused(reused),
            None => PendingRun::InFlight(self.join_or_start()),
        }
    }

    fn recent(&self) -> Option<Arc<CheckRun>> {
        if self.min_interval.is_zero() {
            return None;
        }
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, run) = latest.as_ref()?;
        let age = at.elapsed();
        (age < self.min_interval).then(|| {
            Arc::new(CheckRun {
                reused_age: Some(age),
                ..CheckRun::clone(run)
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
            let run = Arc::new(this.run().await);
            if !this.min_interval.is_zero() {
                *this.latest.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), Arc::clone(&run)));
            }
            // Later callers start a new run; those waiting get this one.
            *this.flight.lock().unwrap_or_else(PoisonError::into_inner) = None;
            let _ = publish.send(Some(run));
        });
        flight
    }

    /// Runs the check once, now, without single flight.
    async fn run(&self) -> CheckRun {
        let checked_at = SystemTime::now();
        let started = Instant::now();
        let timeout = self.spec.timeout;
        let deadline = started + timeout;
        let outcome = match &self.spec.handler {
            Handler::GuestAgentPing => handlers::ping(&self.agent, timeout, deadline).await,
            Handler::Exec(command) => {
                handlers::exec(&self.agent, &self.spec.name, command, timeout, deadline).await
            }
        };
        CheckRun {
            outcome,
            duration: started.elapsed(),
            checked_at,
            reused_age: None,
        }
    }
}

/// The run a check gets when its task ended without one, or overran its deadline.
pub(super) fn no_run(
    result: CheckResult,
    reason: String,
    started: Instant,
    checked_at: SystemTime,
) -> CheckRun {
    CheckRun {
        outcome: Outcome {
            result,
            reason: Some(reason),
            exec: None,
        },
        duration: started.elapsed(),
        checked_at,
        reused_age: None,
    }
}
