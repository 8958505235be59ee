//! The settings in force: flags and environment over the config file over defaults.
//!
//! They come in two parts with two lifetimes: [`ServerSettings`] are bound and used once
//! at start; [`CheckSettings`] are what a reload or a VM's redefinition replaces, and the
//! only part compared to tell whether anything changed.

use std::net::SocketAddr;
use std::time::Duration;

use super::{AgentSetting, LibvirtDomain, LibvirtUri};
use super::{
    ConfigError, ConfigErrors, DEFAULT_LISTEN, DEFAULT_LIVENESS_GRACE,
    DEFAULT_OUTPUT_EXCERPT_BYTES, GatewayFile, Mode, ProbeKind, ProbeSpec,
};
use crate::agent::AgentAddress;

/// Default for `--shutdown-grace`.
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub server: ServerSettings,
    pub checks: CheckSettings,
}

/// What the gateway binds and uses once, at start: a reload does not change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerSettings {
    pub listen: SocketAddr,
    pub shutdown_grace: Duration,
}

/// What the checks run with: one agent connection and the probes that share it.
///
/// Once resolved, `agent` is `vsock://vmi:PORT` only for a hook sidecar ([`Role`]):
/// resolution refuses it otherwise, so no later code has to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckSettings {
    pub agent: AgentSetting,
    /// The daemon of a `libvirt:DOMAIN` agent (read only then).
    pub libvirt_uri: LibvirtUri,
    pub mode: Mode,
    /// On-demand mode: a result younger than this is reused.
    pub min_interval: Duration,
    pub liveness_grace: Duration,
    pub expose_output: bool,
    pub output_excerpt_bytes: usize,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    /// Run by the gateway until it first passes; until then liveness passes and readiness
    /// fails, "starting".
    pub startup: Option<ProbeSpec>,
}

/// Whether the gateway runs as a KubeVirt hook sidecar (`--kubevirt-hook`): only then
/// does it learn its VM, and so the VM's vsock CID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Role {
    #[default]
    Standalone,
    HookSidecar,
}

/// Values given on the command line or in the environment (clap has merged those two).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub listen: Option<SocketAddr>,
    pub agent: Option<AgentSetting>,
    pub libvirt_uri: Option<LibvirtUri>,
    pub shutdown_grace: Option<Duration>,
    /// The agent when neither a flag nor the file names one (in hook mode, the private
    /// channel).
    pub default_agent: Option<AgentAddress>,
    pub role: Role,
}

/// Why settings cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    /// Problems with field paths, reported like the file's own (the agent is not set).
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
    /// `vsock://vmi:PORT` outside hook mode: nothing would ever give it a CID.
    #[error("{}", super::VSOCK_OF_VMI_NEEDS_HOOK)]
    VsockOfVmiNeedsHook,
    /// `libvirt:` alone, with no manifest to name the domain.
    #[error(
        "agent: libvirt: without a domain names the domain of the VirtualMachine(Instance) \
         manifest given as config, which needs metadata.namespace and metadata.name; give \
         libvirt:DOMAIN (a domain name or UUID) otherwise"
    )]
    NoDomainOfManifest,
    /// `libvirt:DOMAIN` in a binary built without the backend.
    #[error("agent: {}", super::LIBVIRT_NOT_BUILT_IN)]
    LibvirtNotBuiltIn,
}

impl Settings {
    /// Applies `overrides` over `file`, then defaults.
    pub(crate) fn resolve(
        file: GatewayFile,
        overrides: &Overrides,
    ) -> Result<Settings, ResolveError> {
        let server = ServerSettings::resolve(&file, overrides);
        Ok(Settings {
            server,
            checks: CheckSettings::resolve(file, overrides)?,
        })
    }
}

impl ServerSettings {
    /// Applies `overrides` over `file`, then defaults.
    pub(crate) fn resolve(file: &GatewayFile, overrides: &Overrides) -> ServerSettings {
        let default_listen = DEFAULT_LISTEN
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)));
        ServerSettings {
            listen: overrides.listen.or(file.listen).unwrap_or(default_listen),
            shutdown_grace: overrides.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        }
    }
}

impl CheckSettings {
    /// Applies `overrides` over `file`, then defaults. The agent has no default outside
    /// hook mode, and may be `vsock://vmi:PORT` only in hook mode.
    pub(crate) fn resolve(
        file: GatewayFile,
        overrides: &Overrides,
    ) -> Result<CheckSettings, ResolveError> {
        let agent = overrides
            .agent
            .clone()
            .or(file.agent)
            .or_else(|| overrides.default_agent.clone().map(AgentSetting::Address))
            .ok_or_else(|| {
                ConfigErrors(vec![ConfigError {
                    path: "agent".into(),
                    message:
                        "not set: give --agent, PROBE_GATEWAY_AGENT, or `agent` in the config file"
                            .into(),
                }])
            })?;
        if let (AgentSetting::VsockOfVmi { .. }, Role::Standalone) = (&agent, overrides.role) {
            return Err(ResolveError::VsockOfVmiNeedsHook);
        }
        let agent = match agent {
            AgentSetting::Libvirt(LibvirtDomain::OfManifest) => AgentSetting::Libvirt(
                LibvirtDomain::Named(file.vmi_domain.ok_or(ResolveError::NoDomainOfManifest)?),
            ),
            agent => agent,
        };
        if matches!(agent, AgentSetting::Libvirt(_)) && !cfg!(feature = "libvirt") {
            return Err(ResolveError::LibvirtNotBuiltIn);
        }
        Ok(CheckSettings {
            agent,
            libvirt_uri: overrides
                .libvirt_uri
                .clone()
                .or(file.libvirt_uri)
                .unwrap_or_default(),
            mode: file.mode.unwrap_or_default(),
            min_interval: file.min_interval.unwrap_or(Duration::ZERO),
            liveness_grace: file.liveness_grace.unwrap_or(DEFAULT_LIVENESS_GRACE),
            expose_output: file.expose_output.unwrap_or(false),
            output_excerpt_bytes: file
                .output_excerpt_bytes
                .unwrap_or(DEFAULT_OUTPUT_EXCERPT_BYTES),
            readiness: file.readiness,
            liveness: file.liveness,
            startup: file.startup,
        })
    }

    pub(crate) fn probe(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        match kind {
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Startup => self.startup.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_agent(agent: &str) -> GatewayFile {
        GatewayFile {
            agent: Some(AgentSetting::parse(agent).unwrap()),
            ..GatewayFile::empty()
        }
    }

    #[test]
    fn the_vmis_vsock_is_refused_outside_hook_mode_with_the_reason() {
        let error = CheckSettings::resolve(with_agent("vsock://vmi:1024"), &Overrides::default())
            .unwrap_err();
        assert_eq!(error, ResolveError::VsockOfVmiNeedsHook);
        assert_eq!(error.to_string(), super::super::VSOCK_OF_VMI_NEEDS_HOOK);
    }

    #[test]
    fn the_vmis_vsock_is_kept_for_a_hook_sidecar_to_resolve() {
        let overrides = Overrides {
            role: Role::HookSidecar,
            ..Overrides::default()
        };
        let settings = CheckSettings::resolve(with_agent("vsock://vmi:1024"), &overrides).unwrap();
        assert_eq!(settings.agent, AgentSetting::VsockOfVmi { port: 1024 });
    }

    #[test]
    fn a_missing_agent_is_an_error_naming_the_field() {
        let error =
            CheckSettings::resolve(GatewayFile::empty(), &Overrides::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("agent: not set: give --agent"),
            "{error}"
        );
    }
}
