//! Prometheus metrics (`GET /metrics`): what operators need to see why a probe fails,
//! since kubelet's events show only the status code. One [`Metrics`] per process; the
//! agent task, the runners and the HTTP layer record into it.
//!
//! Every label takes values from a closed set (probe, the check names of the config,
//! handler, result, command, outcome, a known route or `other`), so a client cannot grow the
//! series count.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::{CheckName, ProbeKind};
use crate::probe::CheckResult;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CheckLabels {
    pub probe: &'static str,
    pub check: CheckName,
    pub handler: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CheckDurationLabels {
    pub probe: &'static str,
    pub check: CheckName,
    pub handler: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeLabels {
    pub probe: &'static str,
}

/// Check names come from the config, a closed set; they are DNS labels, so nothing in them
/// needs escaping.
impl EncodeLabelValue for CheckName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CommandLabels {
    pub command: &'static str,
    pub outcome: CommandOutcome,
}

/// How one agent command ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum CommandOutcome {
    ok,
    error,
    timeout,
    unavailable,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub path: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    pub result: &'static str,
}

/// Check durations: 100 µs (a local ping) to 30 s (the longest sensible exec timeout),
/// in the 1-2.5-5 steps dashboards expect.
const DURATION_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The gateway's metrics and their registry.
pub(crate) struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    check_duration: Family<CheckDurationLabels, Histogram>,
    startup_state: Family<StateLabels, Gauge>,
    pub probes_paused: Gauge,
    paused_answers: Family<ProbeLabels, Counter>,
    pub agent_up: Gauge,
    pub agent_reconnects: Counter,
    pub agent_resyncs: Counter,
    agent_commands: Family<CommandLabels, Counter>,
    pub guest_processes_running: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    config_reloads: Family<ReloadLabels, Counter>,
    domain_state: Family<StateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("probe_gateway");
        let checks = Family::default();
        let check_duration = Family::<CheckDurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        let startup_state = Family::default();
        let probes_paused = Gauge::default();
        let paused_answers = Family::default();
        let agent_up = Gauge::default();
        let agent_reconnects = Counter::default();
        let agent_resyncs = Counter::default();
        let agent_commands = Family::default();
        let guest_processes_running = Gauge::default();
        let http_requests = Family::default();
        let config_reloads = Family::default();
        let domain_state = Family::default();
        registry.register(
            "domain_state",
            "The libvirt domain's state as last learnt (1 for that state, 0 for the others; \
             learnt after a failed agent command, a success meaning running): running, \
             migrating, paused, shutting_down, shut_off, crashed, pmsuspended, no_domain, unknown",
            domain_state.clone(),
        );
        registry.register(
            "config_reloads",
            "Config file reloads, by result: applied, unchanged, or rejected (invalid; the config in force stays)",
            config_reloads.clone(),
        );
        registry.register(
            "checks",
            "Check results, by the probe they answered for, check, handler and result \
             (success, failure, timeout, error); a check two probes list counts for each",
            checks.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "How long checks took, by probe and check",
            check_duration.clone(),
        );
        registry.register(
            "startup_state",
            "The startup probe's state (1 for that state, 0 for the others): starting, \
             started (also without a startup probe), did_not_start",
            startup_state.clone(),
        );
        registry.register(
            "probes_paused",
            "1 while an operator has paused the probes for maintenance, else 0",
            probes_paused.clone(),
        );
        registry.register(
            "paused_answers",
            "Answers given from the maintenance pause instead of the checks, by probe",
            paused_answers.clone(),
        );
        registry.register(
            "agent_up",
            "1 while the agent connection is up and in step, else 0",
            agent_up.clone(),
        );
        registry.register(
            "agent_reconnects",
            "Connections made to the agent after the first",
            agent_reconnects.clone(),
        );
        registry.register(
            "agent_resyncs",
            "guest-sync-delimited resyncs sent (on connect, after timeouts and garbage)",
            agent_resyncs.clone(),
        );
        registry.register(
            "agent_commands",
            "Agent commands, by command and outcome",
            agent_commands.clone(),
        );
        registry.register(
            "guest_processes_running",
            "Guest processes of timed-out exec checks still running in the guest",
            guest_processes_running.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by path (a known route, /docs for the Swagger UI, or \"other\") and status",
            http_requests.clone(),
        );
        Metrics {
            registry,
            checks,
            check_duration,
            startup_state,
            probes_paused,
            paused_answers,
            agent_up,
            agent_reconnects,
            agent_resyncs,
            agent_commands,
            guest_processes_running,
            http_requests,
            config_reloads,
            domain_state,
        }
    }

    /// Sets the domain state gauge to `state` (one of `DomainState::LABELS`).
    #[cfg_attr(
        not(feature = "libvirt"),
        allow(dead_code, reason = "set by the libvirt backend")
    )]
    pub(crate) fn record_domain_state(&self, state: &'static str) {
        for label in crate::agent::DomainState::LABELS {
            self.domain_state
                .get_or_create(&StateLabels { state: label })
                .set(i64::from(label == state));
        }
    }

    /// Counts one reload: `applied`, `unchanged` or `rejected`.
    pub(crate) fn record_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    pub(crate) fn record_check(
        &self,
        probe: ProbeKind,
        check: &CheckName,
        handler: &'static str,
        result: CheckResult,
        seconds: f64,
    ) {
        self.checks
            .get_or_create(&CheckLabels {
                probe: probe.as_str(),
                check: check.clone(),
                handler,
                result: result.as_str(),
            })
            .inc();
        self.check_duration
            .get_or_create(&CheckDurationLabels {
                probe: probe.as_str(),
                check: check.clone(),
                handler,
            })
            .observe(seconds);
    }

    /// Sets the startup state gauge to `state`: `starting`, `started` or `did_not_start`.
    pub(crate) fn record_startup(&self, state: &'static str) {
        for label in ["starting", "started", "did_not_start"] {
            self.startup_state
                .get_or_create(&StateLabels { state: label })
                .set(i64::from(label == state));
        }
    }

    /// Counts an answer the maintenance pause gave.
    pub(crate) fn record_paused_answer(&self, probe: ProbeKind) {
        self.paused_answers
            .get_or_create(&ProbeLabels {
                probe: probe.as_str(),
            })
            .inc();
    }

    pub(crate) fn record_command(&self, command: &'static str, outcome: CommandOutcome) {
        self.agent_commands
            .get_or_create(&CommandLabels { command, outcome })
            .inc();
    }

    pub(crate) fn record_http(&self, path: &str, status: u16) {
        let path = match path {
            "/ready" => "/ready",
            "/live" => "/live",
            "/started" => "/started",
            p if p.starts_with("/ready/") => "/ready/{check}",
            p if p.starts_with("/live/") => "/live/{check}",
            "/healthz" => "/healthz",
            "/metrics" => "/metrics",
            "/openapi.json" => "/openapi.json",
            p if p == "/docs" || p.starts_with("/docs/") => "/docs",
            _ => "other",
        };
        self.http_requests
            .get_or_create(&HttpLabels { path, status })
            .inc();
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names_and_closed_label_sets() {
        let metrics = Metrics::new();
        let app = CheckName::parse("app").unwrap();
        metrics.record_check(
            ProbeKind::Readiness,
            &app,
            "exec",
            CheckResult::Failure,
            0.012,
        );
        metrics.record_startup("starting");
        metrics.record_paused_answer(ProbeKind::Liveness);
        metrics.record_http("/ready/nosuch", 404);
        metrics.record_command("guest-ping", CommandOutcome::timeout);
        metrics.record_http("/no/such/path", 404);
        metrics.agent_up.set(1);
        metrics.record_reload("rejected");
        let text = metrics.encode();
        for line in [
            "probe_gateway_checks_total{probe=\"readiness\",check=\"app\",handler=\"exec\",result=\"failure\"} 1",
            "probe_gateway_startup_state{state=\"starting\"} 1",
            "probe_gateway_startup_state{state=\"started\"} 0",
            "probe_gateway_paused_answers_total{probe=\"liveness\"} 1",
            "probe_gateway_http_requests_total{path=\"/ready/{check}\",status=\"404\"} 1",
            "probe_gateway_agent_commands_total{command=\"guest-ping\",outcome=\"timeout\"} 1",
            "probe_gateway_http_requests_total{path=\"other\",status=\"404\"} 1",
            "probe_gateway_agent_up 1",
            "probe_gateway_config_reloads_total{result=\"rejected\"} 1",
            "probe_gateway_check_duration_seconds_count{probe=\"readiness\",check=\"app\",handler=\"exec\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("/no/such/path"));
        assert!(
            !text.contains("nosuch"),
            "a requested name is not a label value"
        );
    }
}
