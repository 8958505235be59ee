//! [`LibvirtBackend`]: commands to the domain's agent through libvirt, each on a worker
//! thread and bounded by its caller's deadline, and the domain's state learnt after a
//! command fails (a command that succeeds means the domain runs, so a passing probe costs
//! one libvirt call).
//!
//! A command libvirt refuses (domain not running, no domain) fails at once and its worker
//! reads the state before answering. A command that times out is still in libvirt when
//! its caller's deadline passes, so the caller asks for the state then, on the state
//! thread, and waits for it at most [`STATE_WAIT`]: the probe that times out because a
//! migration began is judged by the migration, not by the state before it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::classify::{Fault, classify, connection_lost};
use super::connection::{Connection, Unreachable};
use super::pool::{AGENT_WORKERS, Job, Pool};
use crate::agent::backend::{
    AgentBackend, Call, CallFuture, CallResult, CloseFuture, LateReplies, LateReply, LinkStatus,
};
use crate::agent::protocol::{self, Command};
use crate::agent::{AgentError, DomainState, PauseReason};
use crate::config::LibvirtUri;
use crate::metrics::Metrics;

/// How much longer than its caller libvirt is told to wait for a `guest-exec` reply: the
/// reply carries the pid of a process that runs whether or not anyone waits, so a reply
/// within this window is still handed to the guest-process owner ([`Call::late`]).
const EXEC_REPLY_WINDOW: Duration = Duration::from_secs(10);

/// How long a caller whose command timed out waits for the domain's state past its
/// deadline. Reading the state needs no agent (a few ms); the bound keeps a hung daemon
/// from holding the probe past its `timeoutSeconds` + 0.5 s. Without an answer by then the
/// state last learnt is used.
const STATE_WAIT: Duration = Duration::from_millis(300);

/// The libvirt backend of one domain.
pub(crate) struct LibvirtBackend {
    shared: Arc<Shared>,
}

struct Shared {
    connection: Arc<Connection>,
    /// Agent commands.
    pool: Arc<Pool>,
    /// Reading the domain's state, apart from the agent commands it must not wait behind.
    state_pool: Arc<Pool>,
    has_answered: AtomicBool,
    state: Mutex<Option<DomainState>>,
    metrics: Arc<Metrics>,
}

/// Whether a command reached libvirt's agent command (and so, perhaps, the agent).
#[derive(Clone, Copy)]
enum Sent {
    Yes,
    No,
}

/// A job's progress, so that a caller that gives up on a queued job keeps it from being
/// sent, and knows whether it was.
const QUEUED: u8 = 0;
const SENT: u8 = 1;
const ABANDONED: u8 = 2;

struct AgentJob {
    shared: Arc<Shared>,
    command: Command,
    deadline: Instant,
    late: Option<oneshot::Sender<LateReply>>,
    reply: oneshot::Sender<CallResult>,
    progress: Arc<AtomicU8>,
}

impl Job for AgentJob {
    fn run(self: Box<Self>) {
        let AgentJob {
            shared,
            command,
            deadline,
            late,
            reply,
            progress,
        } = *self;
        let sent = progress.compare_exchange(QUEUED, SENT, Ordering::AcqRel, Ordering::Acquire);
        if sent.is_err() || reply.is_closed() {
            if let Some(late) = late {
                let _ = late.send(LateReply::NotSent);
            }
            return;
        }
        let (result, sent) = shared.command(&command, deadline);
        let late_reply = match (&result, sent) {
            (_, Sent::No) => LateReply::NotSent,
            // libvirt gave up on it too: sent, and whether it ran is unknown.
            (Err(AgentError::Timeout { .. } | AgentError::Unavailable(_)), Sent::Yes) => {
                LateReply::Unanswered
            }
            (result, Sent::Yes) => LateReply::Answered(result.clone()),
        };
        // "Not sent" goes to the late sink first, so the caller knows it with the reply.
        let late = match late {
            Some(late) if late_reply == LateReply::NotSent => {
                let _ = late.send(LateReply::NotSent);
                None
            }
            late => late,
        };
        if reply.send(result).is_err()
            && let Some(late) = late
        {
            let _ = late.send(late_reply);
        }
    }

    fn refuse(self: Box<Self>, why: &str) {
        let _ = self
            .reply
            .send(Err(AgentError::Unavailable(why.to_string())));
        if let Some(late) = self.late {
            let _ = late.send(LateReply::NotSent);
        }
    }
}

/// Reads the domain's state on the state thread, for a caller whose command timed out.
struct StateJob {
    shared: Arc<Shared>,
    deadline: Instant,
    done: oneshot::Sender<()>,
}

impl Job for StateJob {
    fn run(self: Box<Self>) {
        // Its caller has gone on with the state it had: nobody waits for this one.
        if self.done.is_closed() {
            return;
        }
        if let Ok(domain) = self.shared.handles(self.deadline) {
            self.shared.learn_state(&domain);
        }
        let _ = self.done.send(());
    }

    fn refuse(self: Box<Self>, _why: &str) {}
}

impl LibvirtBackend {
    /// Starts the connection to `uri` for `domain`, and the workers.
    pub(crate) fn start(uri: LibvirtUri, domain: String, metrics: Arc<Metrics>) -> LibvirtBackend {
        LibvirtBackend {
            shared: Arc::new(Shared {
                connection: Connection::start(uri, domain),
                pool: Pool::start("libvirt", AGENT_WORKERS),
                state_pool: Pool::start("libvirt-state", 1),
                has_answered: AtomicBool::new(false),
                state: Mutex::new(None),
                metrics,
            }),
        }
    }
}

impl AgentBackend for LibvirtBackend {
    fn call(&self, call: Call) -> CallFuture {
        let Call {
            command,
            deadline,
            late,
        } = call;
        let (reply, replied) = oneshot::channel();
        let progress = Arc::new(AtomicU8::new(QUEUED));
        let shared = Arc::clone(&self.shared);
        self.shared.pool.submit(Box::new(AgentJob {
            shared: Arc::clone(&self.shared),
            command,
            deadline,
            late,
            reply,
            progress: Arc::clone(&progress),
        }));
        Box::pin(async move {
            match timeout_at(deadline, replied).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(AgentError::Unavailable(
                    "the libvirt worker ended without a reply".into(),
                )),
                Err(_) => {
                    let abandoned = progress
                        .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    shared.refresh_state(Instant::now() + STATE_WAIT).await;
                    if abandoned {
                        Err(AgentError::Unavailable(format!(
                            "not sent: all {AGENT_WORKERS} libvirt worker threads are held by \
                             calls libvirt has not returned"
                        )))
                    } else {
                        Err(AgentError::Timeout {
                            agent_silent: false,
                        })
                    }
                }
            }
        })
    }

    /// Delivered while libvirt still waits for the reply (its timeout runs past the
    /// caller's deadline by [`EXEC_REPLY_WINDOW`] for `guest-exec`); what libvirt itself
    /// gives up on is [`LateReply::Unanswered`].
    fn late_replies(&self) -> LateReplies {
        LateReplies::Delivered
    }

    fn status(&self) -> LinkStatus {
        LinkStatus {
            state: self.shared.connection.link_state(),
            has_answered: self.shared.has_answered.load(Ordering::Acquire),
        }
    }

    fn domain_state(&self) -> Option<DomainState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn close(&self) -> CloseFuture<'_> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            shared.pool.close();
            shared.state_pool.close();
            // virConnectClose may talk to the daemon: not on the runtime's thread.
            let closing = tokio::task::spawn_blocking(move || shared.connection.close());
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        })
    }
}

impl Drop for LibvirtBackend {
    fn drop(&mut self) {
        self.shared.pool.close();
        self.shared.state_pool.close();
        self.shared.connection.close();
    }
}

impl Shared {
    /// Learns the domain's state now, on the state thread, waiting for it until `by`.
    async fn refresh_state(self: &Arc<Self>, by: Instant) {
        let (done, learnt) = oneshot::channel();
        self.state_pool.submit(Box::new(StateJob {
            shared: Arc::clone(self),
            deadline: by,
            done,
        }));
        if timeout_at(by, learnt).await.is_err() {
            tracing::debug!(
                domain = self.connection.domain_name(),
                "no domain state within {STATE_WAIT:?} of the deadline: judging by the last one"
            );
        }
    }

    /// Runs `command` on this (worker) thread; whether it reached libvirt's agent command.
    fn command(&self, command: &Command, deadline: Instant) -> (CallResult, Sent) {
        match self.handles(deadline) {
            Ok(domain) => {
                let result = self.agent_command(&domain, command, deadline);
                // libvirt refuses most commands before sending them (domain not running,
                // agent not connected or not resynced yet, its agent job held); only a
                // timeout, or a connection lost during the call, leaves the fate unknown.
                let sent = match &result {
                    Err(AgentError::Timeout { .. }) => Sent::Yes,
                    Err(AgentError::Unavailable(reason)) if reason.contains("connection lost") => {
                        Sent::Yes
                    }
                    Err(
                        AgentError::Unavailable(_)
                        | AgentError::DomainNotRunning(_)
                        | AgentError::NoDomain(_),
                    ) => Sent::No,
                    _ => Sent::Yes,
                };
                (result, sent)
            }
            Err(error) => (Err(error), Sent::No),
        }
    }

    /// The domain's handle, or why there is none (nothing was sent).
    fn handles(&self, deadline: Instant) -> Result<Domain, AgentError> {
        match self.connection.handles(deadline.into_std()) {
            Ok((_, domain)) => Ok(domain),
            Err(Unreachable::Daemon(reason)) => {
                // Without the daemon the state is not known: the probes say why instead.
                self.forget_state();
                Err(AgentError::Unavailable(reason))
            }
            Err(Unreachable::Lookup(error)) => {
                let error = self.failed(&error, "lookup");
                if matches!(error, AgentError::NoDomain(_)) {
                    self.learn(DomainState::NoDomain);
                }
                Err(error)
            }
        }
    }

    fn agent_command(&self, domain: &Domain, command: &Command, deadline: Instant) -> CallResult {
        let name = command.name();
        let mut wait = deadline.saturating_duration_since(Instant::now());
        if matches!(command, Command::Exec { .. }) {
            wait += EXEC_REPLY_WINDOW;
        }
        // libvirt takes whole seconds; at least one (0 would mean "do not wait").
        let seconds = i32::try_from(wait.as_millis().div_ceil(1000).max(1)).unwrap_or(i32::MAX);
        match domain.qemu_agent_command(&command.request_text(), seconds, 0) {
            Ok(text) => {
                self.answered();
                match protocol::parse_reply(text.as_bytes()) {
                    Ok(reply) => reply
                        .outcome
                        .map_err(|error| AgentError::from_reply(name, error)),
                    Err(unparsable) => Err(AgentError::Protocol(unparsable.0)),
                }
            }
            Err(error) => {
                let error = self.failed(&error, name);
                match &error {
                    AgentError::NoDomain(_) => {
                        self.connection.forget_domain();
                        self.learn(DomainState::NoDomain);
                    }
                    AgentError::Unavailable(_)
                    | AgentError::Timeout { .. }
                    | AgentError::DomainNotRunning(_) => self.learn_state(domain),
                    // The agent's own error reply: it answered, the domain runs.
                    _ => self.answered(),
                }
                Err(error)
            }
        }
    }

    /// Classifies a libvirt error, tells the keeper when it means a lost connection, and
    /// logs it (libvirt's own printing is off).
    fn failed(&self, error: &virt::error::Error, command: &'static str) -> AgentError {
        let fault = fault_of(error);
        let message = error.message();
        tracing::debug!(domain = self.connection.domain_name(), command, code = ?error.code(), message, "libvirt call failed");
        if fault == Fault::Connection || connection_lost(message) {
            self.connection.suspect();
        }
        classify(fault, message, command)
    }

    fn answered(&self) {
        self.has_answered.store(true, Ordering::Release);
        self.learn(DomainState::Running);
    }

    /// Asks libvirt for the domain's state (and, running, whether a migration job runs).
    fn learn_state(&self, domain: &Domain) {
        let state = match domain.state() {
            Ok((virt::enumutil::Enum::Known(state), reason)) => state_of(state, reason, domain),
            Ok((_, _)) => DomainState::Unreadable("libvirt gave no state".into()),
            Err(error) => DomainState::Unreadable(error.message().to_string()),
        };
        self.learn(state);
    }

    fn forget_state(&self) {
        let mut last = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if last.take().is_some() {
            self.metrics.record_domain_state("unknown");
        }
    }

    /// Records `state`: the metric, and one log line per change.
    fn learn(&self, state: DomainState) {
        let mut last = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref() == Some(&state) {
            return;
        }
        tracing::info!(domain = self.connection.domain_name(), state = %state, "domain state");
        self.metrics.record_domain_state(state.label());
        *last = Some(state);
    }
}

fn state_of(
    state: virt::domain::DomainState,
    reason: virt::domain::DomainStateReasonEnum,
    domain: &Domain,
) -> DomainState {
    use virt::domain::{DomainState as S, DomainStateReason as R};
    use virt::enumutil::Enum::Known;
    let reason_text = match &reason {
        Known(reason) => reason.to_string(),
        _ => "unknown".to_string(),
    };
    match state {
        S::Running | S::Blocked | S::NoState => {
            if migrating(domain) {
                DomainState::Migrating
            } else {
                DomainState::Running
            }
        }
        S::Paused => DomainState::Paused(match reason {
            Known(R::Paused(Known(reason))) => pause_reason(reason),
            _ => PauseReason::Unknown,
        }),
        S::Shutdown => DomainState::ShuttingDown,
        S::Shutoff => match reason {
            Known(R::Shutoff(Known(virt::domain::DomainShutoffReason::Crashed))) => {
                DomainState::Crashed(reason_text)
            }
            _ => DomainState::ShutOff(reason_text),
        },
        S::Crashed => DomainState::Crashed(reason_text),
        S::PMSuspended => DomainState::PmSuspended,
    }
}

fn pause_reason(reason: virt::domain::DomainPausedReason) -> PauseReason {
    use virt::domain::DomainPausedReason as P;
    match reason {
        P::User => PauseReason::User,
        P::Migration => PauseReason::Migration,
        P::Save => PauseReason::Save,
        P::Dump => PauseReason::Dump,
        P::IOError => PauseReason::IoError,
        P::Watchdog => PauseReason::Watchdog,
        P::FromSnapshot => PauseReason::FromSnapshot,
        P::ShuttingDown => PauseReason::ShuttingDown,
        P::Snapshot => PauseReason::Snapshot,
        P::Crashed => PauseReason::Crashed,
        P::StartingUp => PauseReason::StartingUp,
        P::PostCopy => PauseReason::PostCopy,
        P::PostCopyFailed => PauseReason::PostCopyFailed,
        P::APIError => PauseReason::ApiError,
        P::Unknown => PauseReason::Unknown,
    }
}

/// Whether the domain has a job running: on a running domain in KubeVirt, a migration
/// (KubeVirt's own check reads the job the same way). `virDomainGetJobInfo`, not
/// `virDomainGetJobStats`, which would name the operation: the `virt` crate 0.5 builds a
/// `Vec` from the null pointer libvirt returns when a job has no statistics (undefined
/// behaviour; it aborted here in a debug build while the agent was stopped).
fn migrating(domain: &Domain) -> bool {
    domain
        .job_info()
        .is_ok_and(|job| job.r#type != sys::VIR_DOMAIN_JOB_NONE as i32)
}

fn fault_of(error: &virt::error::Error) -> Fault {
    use virt::enumutil::Enum::Known;
    match error.code() {
        Known(ErrorNumber::NoDomain) => Fault::NoDomain,
        Known(ErrorNumber::OperationInvalid) => Fault::OperationInvalid,
        Known(ErrorNumber::AgentUnresponsive) => Fault::AgentUnresponsive,
        Known(ErrorNumber::AgentCommandTimeout) => Fault::AgentCommandTimeout,
        Known(ErrorNumber::AgentUnsynced) => Fault::AgentUnsynced,
        Known(ErrorNumber::OperationTimeout) => Fault::OperationTimeout,
        Known(ErrorNumber::InternalError) => Fault::InternalError,
        Known(
            ErrorNumber::SystemError
            | ErrorNumber::Rpc
            | ErrorNumber::NoConnect
            | ErrorNumber::InvalidConn,
        ) => Fault::Connection,
        _ => Fault::Other,
    }
}
