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
use crate::config::{CheckName, ExecCommand};
use crate::metrics::Metrics;

/// Handle to one agent connection and its guest processes. Cheap to clone. The connection
/// closes on [`GuestAgent::close`], or by itself once every handle is dropped: the guest
/// processes' keepers stop then too (they hold the connection, which a listening agent
/// serves to one client at a time, so a successor's connection would wait behind them).
#[derive(Clone)]
pub(crate) struct GuestAgent {
    backend: Arc<dyn AgentBackend>,
    processes: Arc<GuestProcesses>,
    _handles: Arc<Handles>,
}

/// Shared by the handles only (not the keepers): the last handle's drop stops the keepers.
struct Handles(Arc<GuestProcesses>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl GuestAgent {
    /// Starts a link to the agent at `connector` (QGA over a stream) on the current tokio
    /// runtime; `excerpt_bytes` bounds the output kept from a guest process.
    pub(crate) fn spawn(
        connector: impl Connect,
        excerpt_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> GuestAgent {
        let link = QgaLink::spawn(connector, Arc::clone(&metrics));
        GuestAgent::over(Arc::new(link), excerpt_bytes, metrics)
    }

    /// The agent reached through `backend`.
    pub(crate) fn over(
        backend: Arc<dyn AgentBackend>,
        excerpt_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> GuestAgent {
        let processes = GuestProcesses::new(Arc::clone(&backend), excerpt_bytes, metrics);
        GuestAgent {
            backend,
            _handles: Arc::new(Handles(Arc::clone(&processes))),
            processes,
        }
    }

    /// The backend's current view of the way to the agent.
    pub(crate) fn status(&self) -> LinkStatus {
        self.backend.status()
    }

    /// The VM's state as the backend last learnt it (`None`: the backend cannot know).
    pub(crate) fn domain_state(&self) -> Option<crate::agent::DomainState> {
        self.backend.domain_state()
    }

    /// `guest-ping`.
    pub(crate) async fn ping(&self, deadline: Instant) -> Result<(), AgentError> {
        let call = Call {
            command: Command::Ping,
            deadline,
            late: None,
        };
        self.backend.call(call).await.map(|_| ())
    }

    /// Runs `command` in the guest for the check `owner` until it exits or `deadline` (see
    /// [`GuestProcesses::run`]).
    pub(crate) async fn exec(
        &self,
        owner: &CheckName,
        command: &ExecCommand,
        deadline: Instant,
    ) -> Result<ExecStatus, AgentError> {
        self.processes.run(owner.clone(), command, deadline).await
    }

    /// Stops tracking guest processes, closes the connection gracefully and waits for it.
    /// Later calls fail as unavailable.
    pub(crate) async fn close(&self) {
        self.processes.close();
        self.backend.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::agent::testing::peer_connector;

    const SECOND: Duration = Duration::from_secs(1);

    /// The check the guest processes are run for.
    fn owner() -> CheckName {
        CheckName::parse("app").unwrap()
    }

    /// The link and the process owner together: a `guest-exec` reply that comes after its
    /// deadline is adopted, and its process blocks the probe's next one until it exits.
    #[tokio::test(start_paused = true)]
    async fn a_late_pid_reply_is_tracked_and_blocks_a_second_guest_process_until_it_exits() {
        let (connector, mut peers) = peer_connector();
        let metrics = Arc::new(Metrics::new());
        let agent = GuestAgent::spawn(connector, 64, Arc::clone(&metrics));
        let mut peer = peers.accept_in_step().await;
        let command = ExecCommand {
            path: "true".into(),
            args: vec![],
        };
        let exec = |agent: &GuestAgent| {
            let (agent, command) = (agent.clone(), command.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + SECOND;
                agent.exec(&owner(), &command, deadline).await
            })
        };
        let first = exec(&agent);
        let started = peer.expect("guest-exec").await;
        let timed_out = AgentError::Timeout {
            agent_silent: false,
        };
        assert_eq!(first.await.unwrap(), Err(timed_out));
        // The pid comes late, before the answer to the resync that followed the timeout.
        peer.reply(&started, json!({"pid": 4242})).await;
        peer.answer_sync().await;
        let poll = peer.expect("guest-exec-status").await;
        assert_eq!(poll["arguments"]["pid"], 4242);
        peer.reply(&poll, json!({"exited": false})).await;
        let second = exec(&agent).await.unwrap();
        assert_eq!(
            second,
            Err(AgentError::PreviousStillRunning { pid: Some(4242) })
        );
        let poll = peer.expect("guest-exec-status").await;
        assert_eq!(metrics.guest_processes_running.get(), 1);
        peer.reply(&poll, json!({"exited": true, "exitcode": 0}))
            .await;
        // Reaped once its keeper has read that reply.
        while metrics.guest_processes_running.get() != 0 {
            tokio::task::yield_now().await;
        }
        let third = exec(&agent);
        let started = peer.expect("guest-exec").await;
        peer.reply(&started, json!({"pid": 4243})).await;
        let poll = peer.expect("guest-exec-status").await;
        peer.reply(&poll, json!({"exited": true, "exitcode": 0}))
            .await;
        assert_eq!(
            third.await.unwrap().map(|status| status.exit_code),
            Ok(Some(0))
        );
    }

    /// A replaced set's connection must end with its last handle even while a guest
    /// process it started still runs: a listening agent serves one client at a time.
    #[tokio::test(start_paused = true)]
    async fn the_last_handle_gone_the_connection_closes_though_a_process_runs() {
        let (connector, mut peers) = peer_connector();
        let agent = GuestAgent::spawn(connector, 64, Arc::new(Metrics::new()));
        let mut peer = peers.accept_in_step().await;
        let command = ExecCommand {
            path: "sleep".into(),
            args: vec!["100".into()],
        };
        let check = {
            let agent = agent.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + SECOND;
                agent.exec(&owner(), &command, deadline).await
            })
        };
        let started = peer.expect("guest-exec").await;
        peer.reply(&started, json!({"pid": 7})).await;
        // Running until the check gives up, and on as an orphan.
        loop {
            let poll = peer.expect("guest-exec-status").await;
            peer.reply(&poll, json!({"exited": false})).await;
            if check.is_finished() {
                break;
            }
        }
        drop(agent);
        // The orphan's keeper stops, and with it the link: the agent sees the close.
        let closed = tokio::time::timeout(30 * SECOND, async {
            while let Some(poll) = peer.next_request().await {
                peer.reply(&poll, json!({"exited": false})).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection stayed open for the orphan");
    }
}
