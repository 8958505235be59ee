//! [`GuestAgent`]: the handle the checks use, the agent as the probes see it: a backend to
//! send commands through, and the owner of the guest processes started through it.

use std::sync::Arc;

use tokio::time::Instant;

use super::backend::{AgentBackend, Call, LinkStatus};
use super::error::AgentError;
use super::link::QgaLink;
use super::processes::GuestProcesses;
use super::protocol::{Command, ExecStatus};
use super::transport::Connect;
use crate::config::{ExecCommand, ProbeKind};
use crate::metrics::Metrics;

/// Handle to one agent connection and its guest processes. Cheap to clone. The connection
/// closes on [`GuestAgent::close`], or by itself once every handle is dropped and no guest
/// process is tracked any more.
#[derive(Clone)]
pub struct GuestAgent {
    backend: Arc<dyn AgentBackend>,
    processes: Arc<GuestProcesses>,
}

impl GuestAgent {
    /// Starts a link to the agent at `connector` (QGA over a stream) on the current tokio
    /// runtime; `excerpt_bytes` bounds the output kept from a guest process.
    pub fn spawn(
        connector: impl Connect,
        excerpt_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> GuestAgent {
        let link = QgaLink::spawn(connector, Arc::clone(&metrics));
        GuestAgent::over(Arc::new(link), excerpt_bytes, metrics)
    }

    /// The agent reached through `backend`.
    pub fn over(
        backend: Arc<dyn AgentBackend>,
        excerpt_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> GuestAgent {
        let processes = GuestProcesses::new(Arc::clone(&backend), excerpt_bytes, metrics);
        GuestAgent { backend, processes }
    }

    /// The backend's current view of the way to the agent.
    pub fn status(&self) -> LinkStatus {
        self.backend.status()
    }

    /// `guest-ping`.
    pub async fn ping(&self, deadline: Instant) -> Result<(), AgentError> {
        let call = Call {
            command: Command::Ping,
            deadline,
            late: None,
        };
        self.backend.call(call).await.map(|_| ())
    }

    /// Runs `command` in the guest for `owner`'s probe until it exits or `deadline` (see
    /// [`GuestProcesses::run`]).
    pub async fn exec(
        &self,
        owner: ProbeKind,
        command: &ExecCommand,
        deadline: Instant,
    ) -> Result<ExecStatus, AgentError> {
        self.processes.run(owner, command, deadline).await
    }

    /// Stops tracking guest processes, closes the connection gracefully and waits for it.
    /// Later calls fail as unavailable.
    pub async fn close(&self) {
        self.processes.close();
        self.backend.close().await;
    }
}
