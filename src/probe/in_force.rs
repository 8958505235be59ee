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
    /// When the liveness grace began: the first set's start, kept by the sets that follow
    /// it (a reload is not a new VM).
    grace_started: Instant,
    /// Background mode: the loops, one per probe. A loop stops when no set holds it.
    background: Vec<Arc<BackgroundProbe>>,
}

impl CheckSet {
    /// Starts the agent client and a checker per configured probe. The liveness grace
    /// counts from now. Must run on a tokio runtime.
    pub fn start(settings: Settings, metrics: &Arc<Metrics>) -> CheckSet {
        let agent = spawn_agent(&settings, metrics);
        CheckSet::build(settings, agent, Instant::now(), None, metrics)
    }

    /// The set for `settings` that takes over from `previous` (a reload, a redefinition).
    /// It keeps what is still true:
    /// - the liveness grace's start;
    /// - on the same agent address, each background probe's state: its counts, its latest
    ///   result, its schedule (a reload never sends readiness back to failing, nor waits
    ///   `initialDelaySeconds` again) when its command is the same;
    /// - when one agent client serves both sets (same address and excerpt size), that
    ///   connection (a private channel or a listening agent serves one client at a time,
    ///   so a second connection would only wait behind the first), and every probe whose
    ///   check is unchanged, with its check in flight and its loop.
    ///
    /// A new agent address (another vsock CID) starts the probes afresh: what was learnt
    /// was about another endpoint. The caller closes `previous.agent` when
    /// [`CheckSet::shares_agent_with`] is false.
    pub fn follow(previous: &CheckSet, settings: Settings, metrics: &Arc<Metrics>) -> CheckSet {
        let same_connection = same_agent(&previous.settings, &settings);
        let agent = if same_connection {
            previous.agent.clone()
        } else {
            spawn_agent(&settings, metrics)
        };
        let before = Before {
            set: previous,
            same_connection,
        };
        let before = (previous.settings.agent == settings.agent).then_some(before);
        CheckSet::build(settings, agent, previous.grace_started, before, metrics)
    }

    /// True when both sets use one agent connection.
    pub fn shares_agent_with(&self, other: &CheckSet) -> bool {
        same_agent(&self.settings, &other.settings)
    }

    /// `before`: the set taken over on the same agent address.
    fn build(
        settings: Settings,
        agent: GuestAgent,
        grace_started: Instant,
        before: Option<Before<'_>>,
        metrics: &Arc<Metrics>,
    ) -> CheckSet {
        let grace = (!settings.liveness_grace.is_zero()).then_some(LivenessGrace {
            started: grace_started,
            window: settings.liveness_grace,
        });
        let checker = |kind: ProbeKind| {
            let spec = settings.probe(kind)?;
            let grace = (kind == ProbeKind::Liveness).then_some(grace).flatten();
            let kept = before
                .filter(|before| before.same_connection)
                .and_then(|before| before.set.probes.get(kind))
                .filter(|checker| checker.runs(spec, settings.min_interval, grace));
            Some(match kept {
                Some(checker) => Arc::clone(checker),
                None => Checker::new(
                    kind,
                    spec.clone(),
                    agent.clone(),
                    grace,
                    settings.min_interval,
                    Arc::clone(metrics),
                ),
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
                    let before = before.and_then(|before| before.set.background_probe(kind));
                    Some(match before {
                        // The same checker: the same spec, the same loop.
                        Some(before) if Arc::ptr_eq(before.checker(), checker) => {
                            Arc::clone(before)
                        }
                        Some(before)
                            if before.checker().spec().handler == checker.spec().handler =>
                        {
                            Arc::new(BackgroundProbe::resume(before, Arc::clone(checker)))
                        }
                        _ => Arc::new(BackgroundProbe::start(Arc::clone(checker))),
                    })
                })
                .collect(),
        };
        CheckSet {
            settings,
            probes,
            agent,
            grace_started,
            background,
        }
    }

    fn background_probe(&self, kind: ProbeKind) -> Option<&Arc<BackgroundProbe>> {
        self.background.iter().find(|probe| probe.kind() == kind)
    }

    /// The answer for `kind`: in background mode the loop's current state, at once;
    /// otherwise `None` (the caller runs the check).
    pub fn background_report(&self, kind: ProbeKind) -> Option<Arc<ProbeReport>> {
        self.background_probe(kind).map(|probe| probe.report())
    }
}

/// The set a new one takes over from, on the same agent address.
#[derive(Clone, Copy)]
struct Before<'a> {
    set: &'a CheckSet,
    /// One agent client serves both sets: their checkers can be shared.
    same_connection: bool,
}

fn spawn_agent(settings: &Settings, metrics: &Arc<Metrics>) -> GuestAgent {
    GuestAgent::spawn(
        settings.agent.clone(),
        settings.output_excerpt_bytes,
        Arc::clone(metrics),
    )
}

/// Two settings that one agent client serves: the same address, the same excerpt size.
fn same_agent(a: &Settings, b: &Settings) -> bool {
    a.agent == b.agent && a.output_excerpt_bytes == b.output_excerpt_bytes
}

/// The current [`CheckSet`], or why there is none yet.
pub struct ChecksInForce {
    current: RwLock<Option<Arc<CheckSet>>>,
    /// The reason `/ready` and `/live` give while there is no set.
    waiting: &'static str,
}

impl ChecksInForce {
    /// No set in force yet; `waiting` is why, as `/ready` and `/live` say until one is.
    pub fn new(waiting: &'static str) -> ChecksInForce {
        ChecksInForce {
            current: RwLock::new(None),
            waiting,
        }
    }

    /// The set in force, or the reason there is none.
    pub fn current(&self) -> Result<Arc<CheckSet>, &'static str> {
        self.read().clone().ok_or(self.waiting)
    }

    /// Puts `set` in force; returns the set it replaces.
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
