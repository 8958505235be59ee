//! The gateway's configuration: what the file says ([`GatewayFile`]), parsed and validated
//! once into domain types, and the settings in force after flags and environment are applied
//! ([`Settings`]).
//!
//! Parsing never stops at the first problem: every error is collected with the field path it
//! concerns, so an operator fixes a file in one round. Nothing outside this module re-checks
//! a value.
//!
//! The parser in layers, each over the one before:
//! - `syntax`: YAML or JSON text into an untyped tree, duplicate keys refused.
//! - `walk`: field paths, the error list, and the readers of scalar fields.
//! - `probe_fields`: one probe in KubeVirt's Probe shape.
//! - `document`: [`parse_document`], a gateway config's fields and the check fields it
//!   shares with the annotation; `manifest`: a VM or VMI manifest as the config.
//! - `vmi`: the VMI at `OnDefineDomain` ([`HookedVmi`]).

mod agent_setting;
mod checks;
mod document;
mod inject;
mod libvirt;
mod manifest;
mod probe_fields;
mod quantity;
mod settings;
mod syntax;
#[cfg(test)]
mod test_support;
mod vmi;
mod walk;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub(crate) use agent_setting::{AgentSetting, VSOCK_OF_VMI_NEEDS_HOOK};
pub(crate) use document::parse_document;
pub(crate) use inject::{
    ImageByDigest, InjectFile, InjectSettings, ResourceFlags, annotation_key, object_name,
    parse_inject_file,
};
pub(crate) use libvirt::{LIBVIRT_NOT_BUILT_IN, LibvirtDomain, LibvirtUri};
pub(crate) use manifest::read_probes_annotation;
pub(crate) use quantity::Quantity;
pub(crate) use settings::{CheckSettings, Overrides, ResolveError, Role, Settings};
pub(crate) use vmi::HookedVmi;

/// The annotation that carries the gateway's checks on a VM or VMI manifest.
pub(crate) const PROBES_ANNOTATION: &str = "probe-gateway.kubevirt.io/probes";

/// The default listen address; [`Settings`] falls back to `0.0.0.0:8080` without IPv6.
pub(crate) const DEFAULT_LISTEN: &str = "[::]:8080";
/// Default for `livenessGraceSeconds`.
pub(crate) const DEFAULT_LIVENESS_GRACE: Duration = Duration::from_secs(600);
/// Default for `outputExcerptBytes`.
pub(crate) const DEFAULT_OUTPUT_EXCERPT_BYTES: usize = 1024;
/// Upper bound for `outputExcerptBytes`: excerpts are held in memory per check.
pub(crate) const MAX_OUTPUT_EXCERPT_BYTES: usize = 65536;

/// Which probe: the two kubelet asks about, and the startup probe the gateway runs itself
/// until it first passes (`/started` tells kubelet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ProbeKind {
    Readiness,
    Liveness,
    Startup,
}

impl ProbeKind {
    pub(crate) const ALL: [ProbeKind; 3] = [
        ProbeKind::Readiness,
        ProbeKind::Liveness,
        ProbeKind::Startup,
    ];

    /// The probes kubelet asks about through `/ready` and `/live`, and KubeVirt's VMI has.
    pub(crate) const KUBELET: [ProbeKind; 2] = [ProbeKind::Readiness, ProbeKind::Liveness];

    /// The lower-case name used in reports, logs and the CLI.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Startup => "startup",
        }
    }

    /// The field name of this probe in a config file or VMI spec.
    pub(crate) fn field(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Startup => "startupProbe",
        }
    }

    /// The HTTP route that answers for this probe.
    pub(crate) fn route(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "/ready",
            ProbeKind::Liveness => "/live",
            ProbeKind::Startup => "/started",
        }
    }
}

/// A check's name: a DNS label (lower-case letters, digits and `-`, starting and ending with
/// a letter or digit, at most 63 characters), since it appears in URL paths
/// (`/ready/<name>`), query strings (`?exclude=<name>`), metric labels and logs, where no
/// character may need escaping. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CheckName(std::sync::Arc<str>);

/// What a check name may be, as errors say it.
pub(crate) const CHECK_NAME_RULE: &str = "lower-case letters, digits and '-', starting and \
     ending with a letter or digit, at most 63 characters";

impl CheckName {
    /// Reads a name written in a config or a request.
    pub(crate) fn parse(text: &str) -> Result<CheckName, String> {
        let bytes = text.as_bytes();
        let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let end_ok =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if bytes.len() <= 63
            && bytes.iter().all(inner_ok)
            && end_ok(bytes.first())
            && end_ok(bytes.last())
        {
            Ok(CheckName(text.into()))
        } else {
            Err(format!(
                "{text:?} is not a check name: use {CHECK_NAME_RULE}"
            ))
        }
    }

    /// The name of the one check of a probe written in KubeVirt's shape (one handler): the
    /// probe's own name, which a named check may not take.
    pub(crate) fn of_probe(kind: ProbeKind) -> CheckName {
        CheckName(kind.as_str().into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command run in the guest through `guest-exec`: the program and its arguments, kept
/// as separate values all the way to the agent (never joined into a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecCommand {
    /// `command[0]`: an absolute path or a name looked up on the guest's PATH.
    pub path: String,
    /// `command[1..]`.
    pub args: Vec<String>,
}

/// When checks run: for each HTTP probe (the default), or in the gateway's own loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// Each `/ready` or `/live` request runs the check (concurrent requests share one);
    /// kubelet applies periods and thresholds.
    #[default]
    OnDemand,
    /// The gateway runs each check every `periodSeconds` after `initialDelaySeconds` and
    /// applies `successThreshold`/`failureThreshold` as kubelet does; requests answer at
    /// once from the current state.
    Background,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::OnDemand => "onDemand",
            Mode::Background => "background",
        }
    }
}

/// What a probe does: the one handler it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handler {
    Exec(ExecCommand),
    GuestAgentPing,
}

impl Handler {
    /// The handler's name as in KubeVirt's API and in reports.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Handler::Exec(_) => "exec",
            Handler::GuestAgentPing => "guestAgentPing",
        }
    }
}

/// One check: what it runs and how long it may take. A check may serve several probes
/// (named checks are defined once and listed by the probes that use them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckSpec {
    pub name: CheckName,
    pub handler: Handler,
    pub timeout: Duration,
}

/// One probe, validated: its checks, all of which must pass, and its schedule. A probe in
/// KubeVirt's VMI Probe shape (one handler) has one check, named after the probe.
///
/// `initialDelaySeconds`, `periodSeconds` and the thresholds are kubelet's business in
/// `onDemand` mode (applying them here too would count failures twice), and the gateway's
/// own schedule in `background` mode and for the startup probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeSpec {
    /// At least one, names unique, in the order written.
    pub checks: Vec<CheckSpec>,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// The longest of the checks' timeouts: the checks run together, so the probe's answer
    /// is due within it.
    pub(crate) fn longest_timeout(&self) -> Duration {
        self.checks
            .iter()
            .map(|check| check.timeout)
            .max()
            .unwrap_or_default()
    }

    /// The check named `name`, if this probe has it.
    pub(crate) fn check(&self, name: &str) -> Option<&CheckSpec> {
        self.checks.iter().find(|check| check.name.as_str() == name)
    }

    /// The names of the probe's checks, for messages: `agent, app`.
    pub(crate) fn names(&self) -> String {
        self.checks
            .iter()
            .map(|check| check.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where the checks of a file came from (not where the file came from: that is
/// [`crate::reload::ConfigSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChecksOrigin {
    /// A gateway config file.
    GatewayConfig,
    /// A KubeVirt `VirtualMachine` or `VirtualMachineInstance` manifest.
    Manifest {
        kind: ManifestKind,
        /// True when the checks came from [`PROBES_ANNOTATION`], false when from the
        /// manifest's own `readinessProbe`/`livenessProbe`.
        from_annotation: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ManifestKind {
    VirtualMachine,
    VirtualMachineInstance,
}

impl ManifestKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ManifestKind::VirtualMachine => "VirtualMachine",
            ManifestKind::VirtualMachineInstance => "VirtualMachineInstance",
        }
    }
}

/// What a config file holds, validated. Fields the file does not set are `None` so that
/// flags and environment can take precedence over the file, and defaults come last.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatewayFile {
    pub origin: ChecksOrigin,
    pub listen: Option<SocketAddr>,
    pub agent: Option<AgentSetting>,
    /// `libvirtUri`: the daemon the libvirt backend connects to.
    pub libvirt_uri: Option<LibvirtUri>,
    /// For a manifest as the config: the libvirt domain KubeVirt gives its VMI
    /// (`<namespace>_<name>`), which `agent: libvirt:` stands for.
    pub vmi_domain: Option<String>,
    pub mode: Option<Mode>,
    pub min_interval: Option<Duration>,
    pub liveness_grace: Option<Duration>,
    pub expose_output: Option<bool>,
    pub output_excerpt_bytes: Option<usize>,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub startup: Option<ProbeSpec>,
}

impl GatewayFile {
    /// A config that sets nothing: hook mode without `--config` starts from it.
    pub(crate) fn empty() -> GatewayFile {
        GatewayFile {
            origin: ChecksOrigin::GatewayConfig,
            listen: None,
            agent: None,
            libvirt_uri: None,
            vmi_domain: None,
            mode: None,
            min_interval: None,
            liveness_grace: None,
            expose_output: None,
            output_excerpt_bytes: None,
            readiness: None,
            liveness: None,
            startup: None,
        }
    }

    pub(crate) fn probe(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        match kind {
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Startup => self.startup.as_ref(),
        }
    }

    /// A one-line description, printed by `validate`.
    pub(crate) fn summary(&self) -> String {
        let origin = match self.origin {
            ChecksOrigin::GatewayConfig => "gateway config".to_string(),
            ChecksOrigin::Manifest {
                kind,
                from_annotation: true,
            } => format!("{} (checks from {PROBES_ANNOTATION})", kind.as_str()),
            ChecksOrigin::Manifest {
                kind,
                from_annotation: false,
            } => format!("{} (checks from its probes)", kind.as_str()),
        };
        let mut parts = vec![origin];
        if let Some(mode) = self.mode {
            parts.push(format!("mode {}", mode.as_str()));
        }
        for kind in ProbeKind::ALL {
            let Some(spec) = self.probe(kind) else {
                continue;
            };
            let checks: Vec<String> = spec
                .checks
                .iter()
                .map(|check| {
                    let what = match &check.handler {
                        Handler::Exec(command) => {
                            let mut words = vec![command.path.clone()];
                            words.extend(command.args.iter().cloned());
                            format!("exec {words:?}")
                        }
                        Handler::GuestAgentPing => "guestAgentPing".to_string(),
                    };
                    let timeout = check.timeout.as_secs();
                    match spec.checks.as_slice() {
                        [_] if check.name == CheckName::of_probe(kind) => {
                            format!("{what}, timeout {timeout}s")
                        }
                        _ => format!("{} ({what}, timeout {timeout}s)", check.name),
                    }
                })
                .collect();
            parts.push(format!("{kind}: {}", checks.join(", ")));
        }
        match &self.agent {
            Some(agent) => parts.push(format!("agent {agent}")),
            None => parts.push(
                "agent not set (give --agent; with --kubevirt-hook, the private channel)"
                    .to_string(),
            ),
        }
        parts.join("; ")
    }
}

/// One problem in a config file: the field path it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// Dotted field path, e.g. `readinessProbe.timeoutSeconds` or `spec.template.metadata
    /// .annotations["probe-gateway.kubevirt.io/probes"]`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_errors(.0))]
pub(crate) struct ConfigErrors(pub Vec<ConfigError>);

fn display_errors(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .errors.0.iter().map(|e| format!("{}: {e}", .path)).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, errors: ConfigErrors },
}

/// Where `--config-text` (`PROBE_GATEWAY_CONFIG_TEXT`) is named in errors.
pub(crate) const CONFIG_TEXT_SOURCE: &str = "--config-text";

/// Reads and validates a config given as text (`--config-text`).
pub(crate) fn load_from_text(text: &str) -> Result<GatewayFile, LoadError> {
    parse_document(text).map_err(|errors| LoadError::Invalid {
        path: CONFIG_TEXT_SOURCE.to_string(),
        errors,
    })
}

/// Reads and validates a config file (gateway config, or VM/VMI manifest; YAML or JSON).
pub(crate) fn load(path: &Path) -> Result<GatewayFile, LoadError> {
    load_text(path).map(|(file, _)| file)
}

/// [`load`], with the text read (to tell a changed file from the same one on reload).
pub(crate) fn load_text(path: &Path) -> Result<(GatewayFile, String), LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    match parse_document(&text) {
        Ok(file) => Ok((file, text)),
        Err(errors) => Err(LoadError::Invalid {
            path: shown,
            errors,
        }),
    }
}
