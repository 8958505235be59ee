//! The checks in force: what `/ready` and `/live` run. A [`CheckSet`] is built as a whole
//! from [`Settings`] (one agent connection, one [`Checker`] per probe) and replaced as a
//! whole, so a request always sees one consistent set. In KubeVirt hook mode there is none
//! until the VM is defined.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::time::Instant;

use super::{BackgroundProbe, Checker, LivenessGrace, ProbeReport, Probes};
use crate::agent::GuestAgent;
use crate::config::{Mode, ProbeKind, Settings};
use crate::metrics::Metrics;

/// The probes of one configuration and the agent connection they share.
pub struct CheckSet {
    pub settings: Settings,
    pub probes: Probes,
    pub agent: GuestAgent,
    /// Background mode: the loops, one per probe (stopped when the set is dropped).
    background: Vec<BackgroundProbe>,
}

impl CheckSet {
    /// Starts the agent client and a checker per configured probe. The liveness grace
    /// counts from now. Must run on a tokio runtime.
    pub fn start(settings: Settings, metrics: &Arc<Metrics>) -> CheckSet {
        let agent = GuestAgent::spawn(
            settings.agent.clone(),
            settings.output_excerpt_bytes,
            Arc::clone(metrics),
        );
        CheckSet::with_agent(settings, agent, metrics)
    }

    /// The same with an agent client already running (for `settings.agent`).
    pub fn with_agent(settings: Settings, agent: GuestAgent, metrics: &Arc<Metrics>) -> CheckSet {
        let grace = (!settings.liveness_grace.is_zero()).then(|| LivenessGrace {
            started: Instant::now(),
            window: settings.liveness_grace,
        });
        let checker = |kind: ProbeKind| {
            settings.probe(kind).map(|spec| {
                let grace = (kind == ProbeKind::Liveness).then_some(grace).flatten();
                Checker::new(
                    kind,
                    spec.clone(),
                    agent.clone(),
                    grace,
                    settings.min_interval,
                    Arc::clone(metrics),
                )
            })
        };
        let probes = Probes {
            readiness: checker(ProbeKind::Readiness),
            liveness: checker(ProbeKind::Liveness),
        };
        let background = match settings.mode {
            Mode::OnDemand => Vec::new(),
            Mode::Background => ProbeKind::ALL
                .into_iter()
                .filter_map(|kind| {
                    let checker = probes.get(kind)?;
                    let spec = settings.probe(kind)?.clone();
                    Some(BackgroundProbe::start(Arc::clone(checker), spec))
                })
                .collect(),
        };
        CheckSet {
            settings,
            probes,
            agent,
            background,
        }
    }

    /// The answer for `kind`: in background mode the loop's current state, at once;
    /// otherwise `None` (the caller runs the check).
    pub fn background_report(&self, kind: ProbeKind) -> Option<Arc<ProbeReport>> {
        self.background
            .iter()
            .find(|probe| probe.kind() == kind)
            .map(BackgroundProbe::report)
    }
}

/// The current [`CheckSet`], or why there is none yet.
pub struct ChecksInForce {
    current: RwLock<Option<Arc<CheckSet>>>,
    /// The reason `/ready` and `/live` give while there is no set.
    waiting: &'static str,
}

impl ChecksInForce {
    pub fn new(set: Option<CheckSet>, waiting: &'static str) -> ChecksInForce {
        ChecksInForce {
            current: RwLock::new(set.map(Arc::new)),
            waiting,
        }
    }

    /// The set in force, or the reason there is none.
    pub fn current(&self) -> Result<Arc<CheckSet>, &'static str> {
        self.read().clone().ok_or(self.waiting)
    }

    /// Puts `set` in force; returns the set it replaces, whose agent the caller closes.
    pub fn replace(&self, set: CheckSet) -> Option<Arc<CheckSet>> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.replace(Arc::new(set))
    }

    /// Takes the set out of force (at shutdown).
    pub fn take(&self) -> Option<Arc<CheckSet>> {
        self.current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<CheckSet>>> {
        // A panic while holding the lock cannot leave the Option half-written.
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }
}
