//! The probes in force: what `/ready` and `/live` run, and the policy for replacing them.
//! A [`ProbeSet`] is built as a whole from [`CheckSettings`] (one agent connection, one
//! [`ProbeRunner`] per probe) and replaced as a whole ([`InForce::put`]), so a request always
//! sees one consistent set. In KubeVirt hook mode there is none until the VM is defined.
//!
//! A set replaced is only dropped, never closed: requests in flight hold it and finish on
//! it, and its agent connection, when the new set does not share it, closes by itself once
//! the last of them has (the agent task ends gracefully when its last handle goes). Only
//! the set in force at shutdown is closed explicitly ([`ProbeSet::close`]).

use std::sync::{Arc, PoisonError, RwLock};

use tokio::time::Instant;

use super::{BackgroundProbe, LivenessGrace, ProbeReport, ProbeRunner};
use crate::agent::GuestAgent;
#[cfg(feature = "libvirt")]
use crate::config::LibvirtDomain;
use crate::config::{AgentSetting, CheckSettings, Mode, ProbeKind};
use crate::metrics::Metrics;

/// Starts the agent client of a new set: [`spawn_agent`] in the gateway, a scripted agent
/// in tests.
type SpawnAgent<'a> = &'a dyn Fn(&CheckSettings, &Arc<Metrics>) -> GuestAgent;

/// The probes of one configuration and the agent connection they share.
pub(crate) struct ProbeSet {
    pub settings: CheckSettings,
    readiness: Option<Arc<ProbeRunner>>,
    liveness: Option<Arc<ProbeRunner>>,
    agent: GuestAgent,
    /// When the liveness grace began: the first set's start, kept by the sets that follow
    /// it (a reload is not a new VM).
    grace_started: Instant,
    /// Background mode: the loops, one per probe. A loop stops when no set holds it.
    background: Vec<Arc<BackgroundProbe>>,
}

/// The set a new one takes over from, on the same agent address.
#[derive(Clone, Copy)]
struct Predecessor<'a> {
    set: &'a ProbeSet,
    /// One agent client serves both sets: their runners can be shared.
    same_connection: bool,
}

impl ProbeSet {
    fn start_with(settings: CheckSettings, metrics: &Arc<Metrics>, spawn: SpawnAgent) -> ProbeSet {
        let agent = spawn(&settings, metrics);
        ProbeSet::build(settings, agent, Instant::now(), None, metrics).0
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
    /// was about another endpoint.
    fn follow(
        previous: &ProbeSet,
        settings: CheckSettings,
        metrics: &Arc<Metrics>,
        spawn: SpawnAgent,
    ) -> (ProbeSet, Kept) {
        let same_connection = same_agent(&previous.settings, &settings);
        let agent = if same_connection {
            previous.agent.clone()
        } else {
            spawn(&settings, metrics)
        };
        let predecessor = Predecessor {
            set: previous,
            same_connection,
        };
        let predecessor = (previous.settings.agent == settings.agent).then_some(predecessor);
        let (set, mut kept) = ProbeSet::build(
            settings,
            agent,
            previous.grace_started,
            predecessor,
            metrics,
        );
        kept.connection = same_connection;
        (set, kept)
    }

    /// `predecessor`: the set taken over on the same agent address. Returns the set and
    /// which of its predecessor's runners and loops it took over.
    fn build(
        settings: CheckSettings,
        agent: GuestAgent,
        grace_started: Instant,
        predecessor: Option<Predecessor<'_>>,
        metrics: &Arc<Metrics>,
    ) -> (ProbeSet, Kept) {
        let mut kept = Kept::default();
        let grace = (!settings.liveness_grace.is_zero()).then_some(LivenessGrace {
            started: grace_started,
            window: settings.liveness_grace,
        });
        let mut runner = |kind: ProbeKind| {
            let spec = settings.probe(kind)?;
            let grace = (kind == ProbeKind::Liveness).then_some(grace).flatten();
            let unchanged = predecessor
                .filter(|predecessor| predecessor.same_connection)
                .and_then(|predecessor| predecessor.set.runner(kind))
                .filter(|runner| runner.runs(spec, settings.min_interval, grace));
            Some(match unchanged {
                Some(runner) => {
                    kept.runners.push(kind);
                    Arc::clone(runner)
                }
                None => ProbeRunner::new(
                    kind,
                    spec.clone(),
                    agent.clone(),
                    grace,
                    settings.min_interval,
                    Arc::clone(metrics),
                ),
            })
        };
        let readiness = runner(ProbeKind::Readiness);
        let liveness = runner(ProbeKind::Liveness);
        let mut set = ProbeSet {
            settings,
            readiness,
            liveness,
            agent,
            grace_started,
            background: Vec::new(),
        };
        if set.settings.mode == Mode::Background {
            for kind in ProbeKind::ALL {
                let Some(runner) = set.runner(kind) else {
                    continue;
                };
                let before =
                    predecessor.and_then(|predecessor| predecessor.set.background_probe(kind));
                let probe = match before {
                    // The same runner: the same spec, the same loop.
                    Some(before) if Arc::ptr_eq(before.runner(), runner) => {
                        kept.loops.push(kind);
                        Arc::clone(before)
                    }
                    Some(before) if before.runner().spec().handler == runner.spec().handler => {
                        kept.resumed.push(kind);
                        Arc::new(BackgroundProbe::resume(before, Arc::clone(runner)))
                    }
                    _ => Arc::new(BackgroundProbe::start(Arc::clone(runner))),
                };
                set.background.push(probe);
            }
        }
        (set, kept)
    }

    /// The runner of `kind`, if that probe is configured.
    pub(crate) fn runner(&self, kind: ProbeKind) -> Option<&Arc<ProbeRunner>> {
        match kind {
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
        }
    }

    fn background_probe(&self, kind: ProbeKind) -> Option<&Arc<BackgroundProbe>> {
        self.background.iter().find(|probe| probe.kind() == kind)
    }

    /// The answer for `kind`: in background mode the loop's current state, at once;
    /// otherwise `None` (the caller runs the check).
    pub(crate) fn background_report(&self, kind: ProbeKind) -> Option<Arc<ProbeReport>> {
        self.background_probe(kind).map(|probe| probe.report())
    }

    /// Closes the agent connection gracefully (at shutdown); checks after it fail as
    /// unavailable.
    pub(crate) async fn close(&self) {
        self.agent.close().await;
    }
}

/// The agent client of `settings`: a stream to the agent, or (in the libvirt binary) libvirt.
pub(crate) fn spawn_agent(settings: &CheckSettings, metrics: &Arc<Metrics>) -> GuestAgent {
    #[cfg(feature = "libvirt")]
    if let AgentSetting::Libvirt(LibvirtDomain::Named(domain)) = &settings.agent {
        let backend = crate::agent::libvirt::LibvirtBackend::start(
            settings.libvirt_uri.clone(),
            domain.clone(),
            Arc::clone(metrics),
        );
        return GuestAgent::over(
            Arc::new(backend),
            settings.output_excerpt_bytes,
            Arc::clone(metrics),
        );
    }
    GuestAgent::spawn(
        settings.agent.clone(),
        settings.output_excerpt_bytes,
        Arc::clone(metrics),
    )
}

/// Two settings that one agent client serves: the same address (and for libvirt the same
/// daemon), the same excerpt size.
fn same_agent(a: &CheckSettings, b: &CheckSettings) -> bool {
    let same_daemon =
        !matches!(a.agent, AgentSetting::Libvirt(_)) || a.libvirt_uri == b.libvirt_uri;
    a.agent == b.agent && same_daemon && a.output_excerpt_bytes == b.output_excerpt_bytes
}

/// What [`InForce::put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SwapOutcome {
    /// The settings are the ones in force (a migration target's second definition, a
    /// reload of the same file): the set in force stays.
    Unchanged,
    /// A new set is in force; it took over `kept` from the one before (nothing for the
    /// first set).
    Applied { kept: Kept },
}

impl SwapOutcome {
    /// The name in logs and in the `result` label of the reload metric.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            SwapOutcome::Unchanged => "unchanged",
            SwapOutcome::Applied { .. } => "applied",
        }
    }

    /// What the set in force now took over from the one before, for the logs.
    pub(crate) fn kept(&self) -> String {
        match self {
            SwapOutcome::Unchanged => "everything".to_string(),
            SwapOutcome::Applied { kept } => kept.to_string(),
        }
    }
}

/// What a new set took over from the one before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Kept {
    /// The agent connection (same address, same excerpt size).
    pub connection: bool,
    /// Probes whose runner goes on as it was: its check in flight, its latest result.
    pub runners: Vec<ProbeKind>,
    /// Background probes whose loop goes on as it was.
    pub loops: Vec<ProbeKind>,
    /// Background probes whose new loop resumes the old one's state and schedule.
    pub resumed: Vec<ProbeKind>,
}

/// For the logs: `the agent connection, readiness's runner, liveness's loop`, or `nothing`.
impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.connection {
            parts.push("the agent connection".to_string());
        }
        for (kinds, what) in [
            (&self.runners, "runner"),
            (&self.loops, "loop"),
            (&self.resumed, "loop state (resumed)"),
        ] {
            parts.extend(kinds.iter().map(|kind| format!("{kind}'s {what}")));
        }
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The current [`ProbeSet`], or why there is none yet.
pub(crate) struct InForce {
    current: RwLock<Option<Arc<ProbeSet>>>,
    /// The reason `/ready` and `/live` give while there is no set.
    waiting: &'static str,
}

impl InForce {
    /// No set in force yet; `waiting` is why, as `/ready` and `/live` say until one is.
    pub(crate) fn new(waiting: &'static str) -> InForce {
        InForce {
            current: RwLock::new(None),
            waiting,
        }
    }

    /// The set in force, or the reason there is none.
    pub(crate) fn current(&self) -> Result<Arc<ProbeSet>, &'static str> {
        self.read().clone().ok_or(self.waiting)
    }

    /// Puts `settings`' probes in force, unless they are the ones in force. A new set
    /// takes over what it can from the old one (see `ProbeSet::follow`). Never waits:
    /// the old set is dropped, not closed (see the module doc).
    pub(crate) fn put(&self, settings: CheckSettings, metrics: &Arc<Metrics>) -> SwapOutcome {
        self.put_with(settings, metrics, &spawn_agent)
    }

    fn put_with(
        &self,
        settings: CheckSettings,
        metrics: &Arc<Metrics>,
        spawn: SpawnAgent,
    ) -> SwapOutcome {
        let current = self.current().ok();
        let (set, kept) = match &current {
            Some(current) if current.settings == settings => return SwapOutcome::Unchanged,
            Some(current) => ProbeSet::follow(current, settings, metrics, spawn),
            None => (
                ProbeSet::start_with(settings, metrics, spawn),
                Kept::default(),
            ),
        };
        self.replace(set);
        SwapOutcome::Applied { kept }
    }

    /// Puts `set` in force; the set it replaces is dropped (see the module doc).
    fn replace(&self, set: ProbeSet) {
        let previous = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Arc::new(set));
        // Outside the lock: the last holder's drop stops loops and tasks.
        drop(previous);
    }

    /// Takes the set out of force (at shutdown).
    pub(crate) fn take(&self) -> Option<Arc<ProbeSet>> {
        self.current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<ProbeSet>>> {
        // A panic while holding the lock cannot leave the Option half-written.
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::agent::AgentAddress;
    use crate::config::{Handler, ProbeSpec};
    use crate::probe::scripted_agent::ScriptedAgent;

    fn ping(timeout_seconds: u64) -> ProbeSpec {
        ProbeSpec {
            handler: Handler::GuestAgentPing,
            timeout: Duration::from_secs(timeout_seconds),
            initial_delay_seconds: 0,
            period_seconds: 10,
            success_threshold: 1,
            failure_threshold: 3,
        }
    }

    /// Both probes pinging the agent at `/agents/NAME`.
    fn settings(agent: &str) -> CheckSettings {
        CheckSettings {
            agent: AgentAddress::Unix(PathBuf::from("/agents").join(agent)).into(),
            libvirt_uri: crate::config::LibvirtUri::default(),
            mode: Mode::OnDemand,
            min_interval: Duration::ZERO,
            liveness_grace: Duration::ZERO,
            expose_output: false,
            output_excerpt_bytes: 1024,
            readiness: Some(ping(5)),
            liveness: Some(ping(5)),
        }
    }

    fn background(agent: &str) -> CheckSettings {
        CheckSettings {
            mode: Mode::Background,
            ..settings(agent)
        }
    }

    /// The probe sets of a test and the scripted agents they reach, by name.
    struct Fixture {
        in_force: InForce,
        metrics: Arc<Metrics>,
        agents: Vec<(&'static str, Arc<ScriptedAgent>)>,
    }

    impl Fixture {
        fn new(agents: &[(&'static str, Arc<ScriptedAgent>)]) -> Fixture {
            Fixture {
                in_force: InForce::new("nothing in force"),
                metrics: Arc::new(Metrics::new()),
                agents: agents.to_vec(),
            }
        }

        fn put(&self, settings: CheckSettings) -> SwapOutcome {
            let spawn = |settings: &CheckSettings, metrics: &Arc<Metrics>| {
                let (_, agent) = self
                    .agents
                    .iter()
                    .find(|(name, _)| {
                        settings.agent
                            == AgentAddress::Unix(PathBuf::from("/agents").join(name)).into()
                    })
                    .expect("an agent of the test");
                GuestAgent::spawn(
                    Arc::clone(agent),
                    settings.output_excerpt_bytes,
                    Arc::clone(metrics),
                )
            };
            self.in_force.put_with(settings, &self.metrics, &spawn)
        }

        fn current(&self) -> Arc<ProbeSet> {
            self.in_force.current().expect("a set in force")
        }

        /// Runs the readiness check of the set in force, as a request would.
        async fn readiness_passes(&self) -> bool {
            let set = self.current();
            let runner = set.runner(ProbeKind::Readiness).expect("readiness");
            runner.check().await.passed()
        }
    }

    fn applied(connection: bool, runners: &[ProbeKind]) -> SwapOutcome {
        SwapOutcome::Applied {
            kept: Kept {
                connection,
                runners: runners.to_vec(),
                ..Kept::default()
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_set_takes_over_nothing() {
        let fixture = Fixture::new(&[("a", ScriptedAgent::new(&[]))]);
        assert!(fixture.in_force.current().is_err());
        assert_eq!(fixture.put(settings("a")), applied(false, &[]));
        assert!(fixture.current().runner(ProbeKind::Readiness).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_settings_leave_the_set_in_force() {
        let fixture = Fixture::new(&[("a", ScriptedAgent::new(&[]))]);
        fixture.put(settings("a"));
        let before = fixture.current();
        assert_eq!(fixture.put(settings("a")), SwapOutcome::Unchanged);
        assert!(Arc::ptr_eq(&before, &fixture.current()));
    }

    #[tokio::test(start_paused = true)]
    async fn another_check_on_the_same_connection_keeps_the_connection_and_the_other_checker() {
        let agent = ScriptedAgent::new(&[]);
        let fixture = Fixture::new(&[("a", Arc::clone(&agent))]);
        fixture.put(settings("a"));
        let readiness = Arc::clone(fixture.current().runner(ProbeKind::Readiness).unwrap());
        let longer = CheckSettings {
            liveness: Some(ping(7)),
            ..settings("a")
        };
        assert_eq!(fixture.put(longer), applied(true, &[ProbeKind::Readiness]));
        let current = fixture.current();
        assert!(Arc::ptr_eq(
            &readiness,
            current.runner(ProbeKind::Readiness).unwrap()
        ));
        assert_eq!(
            current.runner(ProbeKind::Liveness).unwrap().timeout(),
            Duration::from_secs(7)
        );
        assert!(fixture.readiness_passes().await);
        assert_eq!(agent.opened(), 1, "one connection serves both sets");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_background_check_keeps_its_loop_and_a_changed_one_resumes() {
        let fixture = Fixture::new(&[("a", ScriptedAgent::new(&[]))]);
        fixture.put(background("a"));
        let settings = CheckSettings {
            liveness: Some(ProbeSpec {
                failure_threshold: 5,
                ..ping(5)
            }),
            ..background("a")
        };
        let outcome = fixture.put(settings);
        let kept = Kept {
            connection: true,
            runners: vec![ProbeKind::Readiness],
            loops: vec![ProbeKind::Readiness],
            resumed: vec![ProbeKind::Liveness],
        };
        assert_eq!(outcome, SwapOutcome::Applied { kept });
    }

    #[tokio::test(start_paused = true)]
    async fn another_excerpt_size_opens_a_connection_and_the_loops_resume_on_it() {
        let agent = ScriptedAgent::new(&[]);
        let fixture = Fixture::new(&[("a", Arc::clone(&agent))]);
        fixture.put(background("a"));
        let settings = CheckSettings {
            output_excerpt_bytes: 2048,
            ..background("a")
        };
        let kept = Kept {
            resumed: vec![ProbeKind::Readiness, ProbeKind::Liveness],
            ..Kept::default()
        };
        assert_eq!(fixture.put(settings), SwapOutcome::Applied { kept });
        assert!(fixture.readiness_passes().await);
        agent.until_received(1).await;
        assert_eq!(agent.opened(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn another_address_starts_afresh() {
        let fixture = Fixture::new(&[
            ("a", ScriptedAgent::new(&[])),
            ("b", ScriptedAgent::new(&[])),
        ]);
        fixture.put(background("a"));
        assert_eq!(fixture.put(background("b")), applied(false, &[]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_during_a_move_finishes_on_the_old_connection_which_then_closes() {
        let old = ScriptedAgent::answering_after(Duration::from_secs(2));
        let new = ScriptedAgent::new(&[]);
        let fixture = Fixture::new(&[("old", Arc::clone(&old)), ("new", Arc::clone(&new))]);
        fixture.put(settings("old"));
        // A request holds the set it started with, as the HTTP handler does.
        let set = fixture.current();
        let request = tokio::spawn(async move {
            let runner = set.runner(ProbeKind::Readiness).expect("readiness");
            runner.check().await
        });
        old.until_received(1).await;

        assert_eq!(fixture.put(settings("new")), applied(false, &[]));
        assert_eq!(
            old.open(),
            1,
            "the old connection serves the request in flight"
        );
        let report = request.await.expect("the request");
        assert!(report.passed(), "{report:?}");
        tokio::time::timeout(Duration::from_secs(5), old.until_closed())
            .await
            .expect("the old connection closes once no request uses it");
        assert!(fixture.readiness_passes().await);
        assert_eq!((new.opened(), new.open()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_set_taken_out_at_shutdown_is_closed() {
        let agent = ScriptedAgent::new(&[]);
        let fixture = Fixture::new(&[("a", Arc::clone(&agent))]);
        fixture.put(settings("a"));
        // Held elsewhere still (a request that outlived the grace): closing does not wait for it.
        let held = fixture.current();
        assert!(fixture.readiness_passes().await);
        let set = fixture.in_force.take().expect("the set in force");
        set.close().await;
        tokio::time::timeout(Duration::from_secs(5), agent.until_closed())
            .await
            .expect("closed");
        assert!(fixture.in_force.current().is_err());
        let after = held.runner(ProbeKind::Readiness).unwrap().check().await;
        assert!(
            !after.passed(),
            "a closed agent answers no check: {after:?}"
        );
    }

    #[test]
    fn what_a_set_kept_reads_as_a_list_for_the_logs() {
        let kept = Kept {
            connection: true,
            runners: vec![ProbeKind::Readiness],
            loops: vec![],
            resumed: vec![ProbeKind::Liveness],
        };
        assert_eq!(
            kept.to_string(),
            "the agent connection, readiness's runner, liveness's loop state (resumed)"
        );
        assert_eq!(Kept::default().to_string(), "nothing");
    }
}
