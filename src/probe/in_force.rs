//! The probes in force: what `/ready`, `/live` and `/started` answer from, and the policy
//! for replacing them. A [`ProbeSet`] is built as a whole from [`CheckSettings`] (one agent
//! connection, one [`CheckRunner`] per check, each probe's checks as it takes them, the
//! startup probe, the background loops) and replaced as a whole ([`InForce::put`]), so a
//! request always sees one consistent set. In KubeVirt hook mode there is none until the
//! VM is defined.
//!
//! A set replaced is only dropped, never closed: requests in flight hold it and finish on
//! it, and its agent connection, when the new set does not share it, closes by itself once
//! the last of them has (the agent task ends gracefully when its last handle goes). Only
//! the set in force at shutdown is closed explicitly ([`ProbeSet::close`]).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use tokio::time::Instant;

use super::background::{BackgroundCheck, Schedule};
use super::gate::{Gate, PauseWatch};
use super::judge::{LivenessGrace, ProbeCheck, run_together};
use super::report::{Held, ProbeReport, Standing};
use super::runner::CheckRunner;
use super::startup::{Startup, StartupState};
use crate::agent::GuestAgent;
#[cfg(feature = "libvirt")]
use crate::config::LibvirtDomain;
use crate::config::{AgentSetting, CheckName, CheckSettings, Mode, ProbeKind};
use crate::metrics::Metrics;

/// Starts the agent client of a new set: [`spawn_agent`] in the gateway, a scripted agent
/// in tests.
type SpawnAgent<'a> = &'a dyn Fn(&CheckSettings, &Arc<Metrics>) -> GuestAgent;

/// The probes of one configuration and the agent connection they share.
pub(crate) struct ProbeSet {
    pub settings: CheckSettings,
    /// One runner per check, whichever probes list it.
    runners: BTreeMap<CheckName, Arc<CheckRunner>>,
    /// Each probe's checks, in the probe's order.
    probes: BTreeMap<ProbeKind, Vec<Arc<ProbeCheck>>>,
    agent: GuestAgent,
    /// When the liveness grace began: the first set's start, kept by the sets that follow
    /// it (a reload is not a new VM).
    grace_started: Instant,
    /// Background mode: the loops, one per check of readiness and liveness. A loop stops
    /// when no set holds it.
    background: Vec<Arc<BackgroundCheck>>,
    /// The startup probe's state, carried from set to set.
    startup: Arc<Startup>,
    pause: PauseWatch,
    metrics: Arc<Metrics>,
}

/// The set a new one takes over from, on the same agent address.
#[derive(Clone, Copy)]
struct Predecessor<'a> {
    set: &'a ProbeSet,
    /// One agent client serves both sets: their runners can be shared.
    same_connection: bool,
}

impl ProbeSet {
    fn start_with(
        settings: CheckSettings,
        pause: PauseWatch,
        metrics: &Arc<Metrics>,
        spawn: SpawnAgent,
    ) -> ProbeSet {
        let agent = spawn(&settings, metrics);
        ProbeSet::build(settings, agent, Instant::now(), None, pause, metrics).0
    }

    /// The set for `settings` that takes over from `previous` (a reload, a redefinition).
    /// It keeps what is still true:
    /// - the liveness grace's start, and the startup probe's state;
    /// - on the same agent address, each background check's state: its counts, its latest
    ///   result, its schedule (a reload never sends readiness back to failing, nor waits
    ///   `initialDelaySeconds` again) when its command is the same;
    /// - when one agent client serves both sets (same address and excerpt size), that
    ///   connection (a private channel or a listening agent serves one client at a time,
    ///   so a second connection would only wait behind the first), and every check that is
    ///   unchanged, with its run in flight and its loops.
    ///
    /// A new agent address (another vsock CID) starts the checks afresh: what was learnt
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
        let (set, mut kept) = ProbeSet::build(
            settings,
            agent,
            previous.grace_started,
            Some(predecessor),
            previous.pause.clone(),
            metrics,
        );
        kept.connection = same_connection;
        (set, kept)
    }

    /// `predecessor`: the set taken over (its runners and loops only when on the same
    /// agent address). Returns the set and which of its predecessor's runners and loops it
    /// took over.
    fn build(
        settings: CheckSettings,
        agent: GuestAgent,
        grace_started: Instant,
        predecessor: Option<Predecessor<'_>>,
        pause: PauseWatch,
        metrics: &Arc<Metrics>,
    ) -> (ProbeSet, Kept) {
        let mut kept = Kept::default();
        let same_address = predecessor.filter(|p| p.set.settings.agent == settings.agent);
        let grace = (!settings.liveness_grace.is_zero()).then_some(LivenessGrace {
            started: grace_started,
            window: settings.liveness_grace,
        });

        // One runner per check, whichever probes list it.
        let mut runners: BTreeMap<CheckName, Arc<CheckRunner>> = BTreeMap::new();
        for kind in ProbeKind::ALL {
            for spec in settings.probe(kind).map_or(&[][..], |p| &p.checks) {
                if runners.contains_key(&spec.name) {
                    continue;
                }
                let unchanged = same_address
                    .filter(|p| p.same_connection)
                    .and_then(|p| p.set.runners.get(&spec.name))
                    .filter(|runner| runner.runs(spec, settings.min_interval));
                let runner = match unchanged {
                    Some(runner) => {
                        kept.runners.push(spec.name.clone());
                        Arc::clone(runner)
                    }
                    None => CheckRunner::new(spec.clone(), agent.clone(), settings.min_interval),
                };
                runners.insert(spec.name.clone(), runner);
            }
        }

        // Each probe's checks, as the probe takes them.
        let mut probes = BTreeMap::new();
        for kind in ProbeKind::ALL {
            let Some(spec) = settings.probe(kind) else {
                continue;
            };
            let grace = (kind != ProbeKind::Readiness).then_some(grace).flatten();
            let checks: Vec<Arc<ProbeCheck>> = spec
                .checks
                .iter()
                .filter_map(|check| runners.get(&check.name))
                .map(|runner| {
                    let before = same_address
                        .and_then(|p| p.set.probe_check(kind, runner.name()))
                        .filter(|before| before.takes(runner, grace));
                    match before {
                        Some(before) => Arc::clone(before),
                        None => {
                            ProbeCheck::new(kind, Arc::clone(runner), grace, Arc::clone(metrics))
                        }
                    }
                })
                .collect();
            probes.insert(kind, checks);
        }

        // The startup probe: its state goes on from the set before.
        let startup_checks = settings.startup.as_ref().map(|spec| {
            let checks = probes.get(&ProbeKind::Startup).cloned().unwrap_or_default();
            (checks, Schedule::of(spec))
        });
        let startup_gate = Gate::pause_only(pause.clone());
        let startup = match predecessor {
            Some(p) => {
                p.set.startup.follow(startup_checks, startup_gate);
                Arc::clone(&p.set.startup)
            }
            None => match startup_checks {
                Some((checks, schedule)) => {
                    Startup::start(checks, schedule, startup_gate, Arc::clone(metrics))
                }
                None => Startup::started(Arc::clone(metrics)),
            },
        };

        let mut background = Vec::new();
        if settings.mode == Mode::Background {
            for kind in ProbeKind::KUBELET {
                let (Some(spec), Some(checks)) = (settings.probe(kind), probes.get(&kind)) else {
                    continue;
                };
                let schedule = Schedule::of(spec);
                let gate = Gate::after_start(pause.clone(), startup.started_watch());
                for check in checks {
                    let before =
                        same_address.and_then(|p| p.set.background_check(kind, check.name()));
                    let key = (kind, check.name().clone());
                    let looped = match before {
                        // The same check of the same probe on the same schedule: the loop.
                        Some(before)
                            if Arc::ptr_eq(before.check(), check)
                                && *before.schedule() == schedule =>
                        {
                            kept.loops.push(key);
                            Arc::clone(before)
                        }
                        Some(before)
                            if before.check().runner().spec().handler
                                == check.runner().spec().handler =>
                        {
                            kept.resumed.push(key);
                            Arc::new(BackgroundCheck::resume(
                                before,
                                Arc::clone(check),
                                schedule,
                                gate.clone(),
                            ))
                        }
                        _ => Arc::new(BackgroundCheck::start(
                            Arc::clone(check),
                            schedule,
                            gate.clone(),
                        )),
                    };
                    background.push(looped);
                }
            }
        }
        let set = ProbeSet {
            settings,
            runners,
            probes,
            agent,
            grace_started,
            background,
            startup,
            pause,
            metrics: Arc::clone(metrics),
        };
        (set, kept)
    }

    /// The runner of the check `name`.
    #[cfg(test)]
    pub(super) fn runner(&self, name: &str) -> Option<&Arc<CheckRunner>> {
        self.runners
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, r)| r)
    }

    fn probe_check(&self, kind: ProbeKind, name: &CheckName) -> Option<&Arc<ProbeCheck>> {
        self.probes
            .get(&kind)?
            .iter()
            .find(|check| check.name() == name)
    }

    fn background_check(&self, kind: ProbeKind, name: &CheckName) -> Option<&Arc<BackgroundCheck>> {
        self.background
            .iter()
            .find(|check| check.kind() == kind && check.name() == name)
    }

    /// The answer for `kind` (readiness or liveness) from the checks named in `selected`
    /// (the probe's checks, or some of them: the caller has checked the names). The
    /// checks run together, each within its timeout, so the answer comes within the
    /// longest timeout + 0.5 s; in background mode it is the loops' state, at once. While
    /// the probes are paused or the startup probe holds them, that state answers and no
    /// check runs.
    pub(crate) async fn answer(&self, kind: ProbeKind, selected: &[CheckName]) -> ProbeReport {
        let begun = Instant::now();
        let checked_at = SystemTime::now();
        if let Some(held) = self.held(kind) {
            if held.standing == Standing::Paused {
                self.metrics.record_paused_answer(kind);
            }
            return ProbeReport {
                probe: kind,
                checks: Vec::new(),
                held: Some(held),
                duration: begun.elapsed(),
                checked_at,
            };
        }
        let checks: Vec<&Arc<ProbeCheck>> = self
            .probes
            .get(&kind)
            .map(|checks| {
                checks
                    .iter()
                    .filter(|check| selected.contains(check.name()))
                    .collect()
            })
            .unwrap_or_default();
        let reports = if self.settings.mode == Mode::Background {
            checks
                .iter()
                .filter_map(|check| self.background_check(kind, check.name()))
                .map(|looped| looped.report())
                .collect()
        } else {
            // Every run started before the first is waited for: they run together.
            let pending: Vec<_> = checks.iter().map(|check| check.start()).collect();
            let mut reports = Vec::with_capacity(pending.len());
            for check in pending {
                reports.push(check.finish().await);
            }
            reports
        };
        ProbeReport {
            probe: kind,
            checks: reports,
            held: None,
            duration: begun.elapsed(),
            checked_at,
        }
    }

    /// The state that answers for `kind` instead of its checks: a pause, then the start.
    fn held(&self, kind: ProbeKind) -> Option<Held> {
        if let Some(pause) = self.pause.borrow().as_ref() {
            return Some(Held {
                standing: Standing::Paused,
                passed: kind == ProbeKind::Liveness,
                reason: pause.reason(),
            });
        }
        self.startup.held(kind)
    }

    /// `/started`: the startup probe's state with its latest checks, or `None` when there
    /// is no startup probe.
    pub(crate) fn started_report(&self) -> Option<ProbeReport> {
        self.settings.startup.as_ref()?;
        let state = self.startup.state();
        let latest = latest_of(&state).cloned();
        // Not started: what readiness is held with, which never passes.
        let held = self.startup.held(ProbeKind::Readiness);
        Some(ProbeReport {
            probe: ProbeKind::Startup,
            checks: latest.map(|l| l.checks.clone()).unwrap_or_default(),
            held,
            duration: latest_duration(&state),
            checked_at: latest_checked_at(&state),
        })
    }

    /// Closes the agent connection gracefully (at shutdown); checks after it fail as
    /// unavailable.
    pub(crate) async fn close(&self) {
        self.agent.close().await;
    }
}

fn latest_of(state: &StartupState) -> Option<&Arc<ProbeReport>> {
    match state {
        StartupState::Started { latest } | StartupState::Starting { latest, .. } => latest.as_ref(),
        StartupState::DidNotStart { latest, .. } => Some(latest),
    }
}

fn latest_duration(state: &StartupState) -> std::time::Duration {
    latest_of(state).map(|l| l.duration).unwrap_or_default()
}

fn latest_checked_at(state: &StartupState) -> SystemTime {
    latest_of(state).map_or_else(SystemTime::now, |l| l.checked_at)
}

/// Runs every check of `spec` once, together, as probe `kind` takes them, with no liveness
/// grace (a one-off check tells what it finds): the `check` command.
pub(crate) async fn run_once(
    kind: ProbeKind,
    spec: &crate::config::ProbeSpec,
    agent: &GuestAgent,
    metrics: &Arc<Metrics>,
) -> ProbeReport {
    let begun = Instant::now();
    let checked_at = SystemTime::now();
    let checks: Vec<Arc<ProbeCheck>> = spec
        .checks
        .iter()
        .map(|check| {
            let runner = CheckRunner::new(check.clone(), agent.clone(), std::time::Duration::ZERO);
            ProbeCheck::new(kind, runner, None, Arc::clone(metrics))
        })
        .collect();
    ProbeReport {
        probe: kind,
        checks: run_together(&checks).await,
        held: None,
        duration: begun.elapsed(),
        checked_at,
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
    /// Checks whose runner goes on as it was: its run in flight, its latest result.
    pub runners: Vec<CheckName>,
    /// Background checks (probe, check) whose loop goes on as it was.
    pub loops: Vec<(ProbeKind, CheckName)>,
    /// Background checks whose new loop resumes the old one's state and schedule.
    pub resumed: Vec<(ProbeKind, CheckName)>,
}

/// For the logs: `the agent connection, readiness's runner, liveness's loop`, or `nothing`.
/// A probe's own check reads as the probe; a named check of a probe as `readiness app`.
impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.connection {
            parts.push("the agent connection".to_string());
        }
        parts.extend(self.runners.iter().map(|name| format!("{name}'s runner")));
        let of = |(kind, name): &(ProbeKind, CheckName)| {
            if *name == CheckName::of_probe(*kind) {
                kind.to_string()
            } else {
                format!("{kind} {name}")
            }
        };
        for (keys, what) in [
            (&self.loops, "loop"),
            (&self.resumed, "loop state (resumed)"),
        ] {
            parts.extend(keys.iter().map(|key| format!("{}'s {what}", of(key))));
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
    /// The operator's pause, which every set follows.
    pause: PauseWatch,
}

impl InForce {
    /// No set in force yet; `waiting` is why, as `/ready` and `/live` say until one is.
    /// The sets follow `pause`.
    pub(crate) fn new(waiting: &'static str, pause: PauseWatch) -> InForce {
        InForce {
            current: RwLock::new(None),
            waiting,
            pause,
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
                ProbeSet::start_with(settings, self.pause.clone(), metrics, spawn),
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
    use crate::config::{CheckSpec, Handler, ProbeSpec};
    use crate::probe::scripted_agent::ScriptedAgent;

    /// A probe of `kind` in KubeVirt's shape: a guestAgentPing.
    fn ping_of(kind: ProbeKind, timeout_seconds: u64) -> ProbeSpec {
        ProbeSpec {
            checks: vec![CheckSpec {
                name: CheckName::of_probe(kind),
                handler: Handler::GuestAgentPing,
                timeout: Duration::from_secs(timeout_seconds),
            }],
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
            readiness: Some(ping_of(ProbeKind::Readiness, 5)),
            liveness: Some(ping_of(ProbeKind::Liveness, 5)),
            startup: None,
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
                in_force: InForce::new("nothing in force", crate::probe::never_paused()),
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

        /// Runs the readiness check of the set in force now, whatever the mode.
        async fn readiness_passes(&self) -> bool {
            let set = self.current();
            let check = set
                .probe_check(ProbeKind::Readiness, &own(ProbeKind::Readiness))
                .expect("readiness");
            check.check().await.passed()
        }
    }

    /// The probe's own check of `kind`, and that key of a background loop.
    fn own(kind: ProbeKind) -> CheckName {
        CheckName::of_probe(kind)
    }

    fn key(kind: ProbeKind) -> (ProbeKind, CheckName) {
        (kind, own(kind))
    }

    fn applied(connection: bool, runners: &[ProbeKind]) -> SwapOutcome {
        SwapOutcome::Applied {
            kept: Kept {
                connection,
                runners: runners.iter().map(|kind| own(*kind)).collect(),
                ..Kept::default()
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_set_takes_over_nothing() {
        let fixture = Fixture::new(&[("a", ScriptedAgent::new(&[]))]);
        assert!(fixture.in_force.current().is_err());
        assert_eq!(fixture.put(settings("a")), applied(false, &[]));
        assert!(fixture.current().runner("readiness").is_some());
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
        let readiness = Arc::clone(fixture.current().runner("readiness").unwrap());
        let longer = CheckSettings {
            liveness: Some(ping_of(ProbeKind::Liveness, 7)),
            ..settings("a")
        };
        assert_eq!(fixture.put(longer), applied(true, &[ProbeKind::Readiness]));
        let current = fixture.current();
        assert!(Arc::ptr_eq(
            &readiness,
            current.runner("readiness").unwrap()
        ));
        assert_eq!(
            current.runner("liveness").unwrap().timeout(),
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
                ..ping_of(ProbeKind::Liveness, 5)
            }),
            ..background("a")
        };
        let outcome = fixture.put(settings);
        let kept = Kept {
            connection: true,
            runners: vec![own(ProbeKind::Readiness), own(ProbeKind::Liveness)],
            loops: vec![key(ProbeKind::Readiness)],
            resumed: vec![key(ProbeKind::Liveness)],
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
            resumed: vec![key(ProbeKind::Readiness), key(ProbeKind::Liveness)],
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
            set.answer(ProbeKind::Readiness, &[own(ProbeKind::Readiness)])
                .await
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
        let after = held
            .answer(ProbeKind::Readiness, &[own(ProbeKind::Readiness)])
            .await;
        assert!(
            !after.passed(),
            "a closed agent answers no check: {after:?}"
        );
    }

    /// Both probes pinging, and a startup probe that pings too.
    fn with_startup(agent: &str) -> CheckSettings {
        CheckSettings {
            startup: Some(ProbeSpec {
                period_seconds: 1,
                ..ping_of(ProbeKind::Startup, 1)
            }),
            ..settings(agent)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_startup_state_outlives_a_reload_and_a_reload_without_it_counts_as_started() {
        // The agent fails the first two pings: the startup probe counts two failures.
        let fixture = Fixture::new(&[("a", ScriptedAgent::new(&[false, false]))]);
        fixture.put(with_startup("a"));
        let startup = Arc::clone(&fixture.current().startup);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let counted = |state: StartupState| match state {
            StartupState::Starting { failures, .. } => failures,
            other => panic!("not starting: {other:?}"),
        };
        assert_eq!(counted(startup.state()), 2);
        // Another readiness check: the same startup, its count kept.
        let reloaded = CheckSettings {
            readiness: Some(ping_of(ProbeKind::Readiness, 3)),
            ..with_startup("a")
        };
        fixture.put(reloaded);
        assert!(Arc::ptr_eq(&startup, &fixture.current().startup));
        assert_eq!(counted(startup.state()), 2);
        let held = fixture.current().held(ProbeKind::Readiness).expect("held");
        assert_eq!(held.standing, Standing::Starting);
        // The startup probe removed: started, and nothing holds the probes.
        fixture.put(settings("a"));
        assert!(matches!(startup.state(), StartupState::Started { .. }));
        assert!(fixture.current().held(ProbeKind::Readiness).is_none());
        assert!(
            fixture.current().started_report().is_none(),
            "/started is 404 then"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_two_probes_list_has_one_runner_and_a_probe_each() {
        let fixture = Fixture::new(&[("a", ScriptedAgent::new(&[]))]);
        let shared = CheckSpec {
            name: CheckName::parse("agent").unwrap(),
            handler: Handler::GuestAgentPing,
            timeout: Duration::from_secs(1),
        };
        let probe = ProbeSpec {
            checks: vec![shared],
            ..ping_of(ProbeKind::Readiness, 1)
        };
        fixture.put(CheckSettings {
            readiness: Some(probe.clone()),
            liveness: Some(probe),
            ..settings("a")
        });
        let set = fixture.current();
        assert_eq!(set.runners.len(), 1);
        let (readiness, liveness) = (
            set.probe_check(ProbeKind::Readiness, &CheckName::parse("agent").unwrap()),
            set.probe_check(ProbeKind::Liveness, &CheckName::parse("agent").unwrap()),
        );
        let (readiness, liveness) = (readiness.unwrap(), liveness.unwrap());
        assert!(Arc::ptr_eq(readiness.runner(), liveness.runner()));
        assert!(
            !Arc::ptr_eq(readiness, liveness),
            "each probe judges it its way"
        );
    }

    #[test]
    fn what_a_set_kept_reads_as_a_list_for_the_logs() {
        let kept = Kept {
            connection: true,
            runners: vec![own(ProbeKind::Readiness), CheckName::parse("app").unwrap()],
            loops: vec![(ProbeKind::Readiness, CheckName::parse("app").unwrap())],
            resumed: vec![key(ProbeKind::Liveness)],
        };
        assert_eq!(
            kept.to_string(),
            "the agent connection, readiness's runner, app's runner, readiness app's loop, \
             liveness's loop state (resumed)"
        );
        assert_eq!(Kept::default().to_string(), "nothing");
    }
}
