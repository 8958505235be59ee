//! The settings in force: flags and environment over the config file over defaults.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    ConfigError, ConfigErrors, DEFAULT_LISTEN, DEFAULT_LIVENESS_GRACE,
    DEFAULT_OUTPUT_EXCERPT_BYTES, GatewayFile, Mode, ProbeKind, ProbeSpec,
};
use crate::agent::AgentAddress;

/// Default for `--shutdown-grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub agent: AgentAddress,
    pub mode: Mode,
    /// On-demand mode: a result younger than this is reused.
    pub min_interval: Duration,
    pub liveness_grace: Duration,
    pub expose_output: bool,
    pub output_excerpt_bytes: usize,
    pub readiness: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub shutdown_grace: Duration,
}

/// Values given on the command line or in the environment (clap has merged those two).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub agent: Option<AgentAddress>,
    pub shutdown_grace: Option<Duration>,
    /// The agent when neither a flag nor the file names one (in hook mode, the private
    /// channel).
    pub default_agent: Option<AgentAddress>,
}

impl Settings {
    /// Applies `overrides` over `file`, then defaults. The agent has no default outside
    /// hook mode.
    pub fn resolve(file: GatewayFile, overrides: Overrides) -> Result<Settings, ConfigErrors> {
        let agent = overrides
            .agent
            .or(file.agent)
            .or(overrides.default_agent)
            .ok_or_else(|| {
                ConfigErrors(vec![ConfigError {
                    path: "agent".into(),
                    message:
                        "not set: give --agent, PROBE_GATEWAY_AGENT, or `agent` in the config file"
                            .into(),
                }])
            })?;
        let default_listen = DEFAULT_LISTEN
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 8080)));
        Ok(Settings {
            listen: overrides.listen.or(file.listen).unwrap_or(default_listen),
            agent,
            mode: file.mode.unwrap_or_default(),
            min_interval: file.min_interval.unwrap_or(Duration::ZERO),
            liveness_grace: file.liveness_grace.unwrap_or(DEFAULT_LIVENESS_GRACE),
            expose_output: file.expose_output.unwrap_or(false),
            output_excerpt_bytes: file
                .output_excerpt_bytes
                .unwrap_or(DEFAULT_OUTPUT_EXCERPT_BYTES),
            readiness: file.readiness,
            liveness: file.liveness,
            shutdown_grace: overrides.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
        })
    }

    pub fn probe(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        match kind {
            ProbeKind::Readiness => self.readiness.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
        }
    }
}
