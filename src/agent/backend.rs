//! The interface between the checks and a way to the agent: send one command, get its
//! reply or a typed error by a deadline. The guest-process owner ([`super::processes`])
//! and the ping check sit above it; below it sits the link that speaks QGA over a stream
//! ([`super::link`]: unix socket, vsock, hybrid vsock), and later libvirt's agent command.
//!
//! The two kinds of backend differ in what a caller can know, and the interface says so:
//! - A stream to the agent carries replies that come after their deadline (the agent
//!   answers in order, late or not); a libvirt connection drops them. So a `guest-exec`
//!   whose reply missed its deadline can be adopted late only where
//!   [`AgentBackend::late_replies`] says [`LateReplies::Delivered`], and libvirt's backend
//!   delivers only what comes within the longer timeout it gives libvirt.
//! - libvirt knows the VM's state and refuses at once when it is not running
//!   ([`AgentError::DomainNotRunning`], [`AgentError::NoDomain`]); a stream can only time out.
//! - A stream needs resyncing after a timeout; libvirt resyncs by itself. Either way that is
//!   the backend's business, not the caller's.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::domain_state::DomainState;
use super::error::AgentError;
use super::protocol::Command;

/// The reply of one command: the value of its `return`, or why there is none.
pub(crate) type CallResult = Result<Value, AgentError>;

/// The future of [`AgentBackend::call`].
pub(crate) type CallFuture = Pin<Box<dyn Future<Output = CallResult> + Send>>;

/// The future of [`AgentBackend::close`].
pub(crate) type CloseFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One command to send, and by when its reply is wanted.
pub(crate) struct Call {
    pub command: Command,
    pub deadline: Instant,
    /// Where the reply goes if it comes after the deadline, for a command whose effect
    /// outlives the wait (`guest-exec` starts a process whether or not its caller is still
    /// there). `None`: a late reply is dropped.
    pub late: Option<oneshot::Sender<LateReply>>,
}

/// What became of the reply of a command whose caller stopped waiting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LateReply {
    /// It came after all.
    Answered(CallResult),
    /// The command was never sent: it did nothing in the guest.
    NotSent,
    /// It was sent and its reply will not come (the agent restarted, or answered a later
    /// resync first): whether it ran is unknown. A dropped sender means the same.
    Unanswered,
}

/// Whether a reply that misses its deadline can still reach [`Call::late`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LateReplies {
    /// The backend hands late replies on (a stream to the agent).
    Delivered,
    /// The backend drops them: a late sink only ever hears `Unanswered`. (libvirt drops
    /// what comes after its own timeout, but its backend waits past the caller's deadline
    /// and delivers what comes within: docs/libvirt.md.)
    #[allow(
        dead_code,
        reason = "no backend drops every late reply today; the process owner's rule for one is kept and tested"
    )]
    Dropped,
}

/// The state of the way to the agent, as the backend last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Not connected; the reason of the last failure.
    Disconnected(String),
    /// Connected, waiting for the agent to answer a resync.
    Syncing,
    /// Connected and in step: commands are sent.
    Ready,
}

/// What a backend publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkStatus {
    pub state: LinkState,
    /// The agent has answered at least once since the backend started (the liveness
    /// grace ends with it).
    pub has_answered: bool,
}

/// A way to the agent that takes one command at a time.
pub(crate) trait AgentBackend: Send + Sync + 'static {
    /// Sends `call.command` and waits for its reply until `call.deadline`. Never waits
    /// beyond the deadline.
    fn call(&self, call: Call) -> CallFuture;

    /// Whether late replies reach [`Call::late`].
    fn late_replies(&self) -> LateReplies;

    /// The current state of the way to the agent.
    fn status(&self) -> LinkStatus;

    /// The VM's state as last learnt, for a backend that knows it (libvirt); `None` for a
    /// stream to the agent, which cannot know.
    fn domain_state(&self) -> Option<DomainState> {
        None
    }

    /// Ends the way to the agent gracefully; later calls fail as unavailable.
    fn close(&self) -> CloseFuture<'_>;
}
