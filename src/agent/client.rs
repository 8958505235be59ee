//! The one long-lived agent connection: a task that owns it, and [`GuestAgent`], the
//! cloneable handle everything else uses.
//!
//! Rules this task keeps, all of them from how qemu-ga behaves (FIELD-NOTES §1):
//! - Exactly one command is in flight on the socket; requests queue in a bounded channel.
//! - Every command carries an id; a reply with another id is stale and dropped, except a
//!   late `guest-exec` reply, whose pid is then tracked like any other guest process.
//! - After connecting, after a timeout and after an unparsable line, the stream is resynced
//!   (`0xFF` + `guest-sync-delimited` with a random id) before the next command is sent.
//! - A guest process whose check gave up keeps running (the agent cannot kill it): it is
//!   polled in the background until reaped, and its probe may not start another meanwhile.
//! - The connection is closed gracefully (shut down writing, drain to EOF within a bound):
//!   a listening qemu-ga exits when a client closes with a reply unread.
//! - An absent agent is not fatal: reconnects back off exponentially up to one second, and
//!   requests meanwhile fail at once with the last connect error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::error::AgentError;
use super::framing::{Frame, FrameReader, FramingError};
use super::protocol::{self, Command, ExecStatus};
use super::transport::{BoxStream, CONNECT_TIMEOUT, Connect};
use crate::config::{ExecCommand, ProbeKind};
use crate::metrics::{CommandOutcome, Metrics};

/// Requests waiting for the agent task; callers beyond this wait (within their deadline).
const QUEUE_DEPTH: usize = 64;
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// A connection that served a command, or lasted this long with the agent answering, was
/// a good one: after it ends, reconnect at once. A peer that answers a resync and hangs up
/// sooner gets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// A resync unanswered for this long is sent again (with a new id): on a virtio-serial
/// port whose guest side is not open yet, earlier bytes may never reach an agent.
const RESYNC_RESEND: Duration = Duration::from_secs(1);
/// Unanswered resync ids remembered; an older one's reply is then taken as stale.
const MAX_PENDING_SYNCS: usize = 8;
/// The longest wait between resends of an unanswered resync.
const RESYNC_RESEND_MAX: Duration = Duration::from_secs(10);
/// How long a write may block (a hung agent stops reading; its socket buffer fills).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a graceful close may drain the agent's remaining replies.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// The same for a peer that broke the protocol: it gets less patience.
const HOSTILE_DRAIN: Duration = Duration::from_millis(200);
/// Lines kept from a drain to look for late `guest-exec` replies.
const MAX_DRAINED_LINES: usize = 16;
/// Polling of guest processes left behind by timed-out checks.
const ORPHAN_POLL_FIRST: Duration = Duration::from_millis(100);
const ORPHAN_POLL_MAX: Duration = Duration::from_secs(1);
const ORPHAN_POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// The state of the link to the agent, as the task last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; the reason of the last failure.
    Disconnected(String),
    /// Connected, waiting for the agent to answer a resync.
    Syncing,
    /// Connected and in step: commands are sent.
    Ready,
}

/// What the task publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub state: LinkState,
    /// The agent has answered at least once since the gateway started.
    pub has_answered: bool,
}

/// Handle to the agent task. Cheap to clone; the task ends when [`GuestAgent::close`] is
/// called or every handle is dropped.
#[derive(Clone)]
pub struct GuestAgent {
    requests: mpsc::Sender<Request>,
    /// Hand-overs of running guest processes: unbounded (one per timed-out check at most)
    /// and read before requests, so a hand-over is never lost nor overtaken.
    handovers: mpsc::UnboundedSender<Handover>,
    status: watch::Receiver<LinkStatus>,
    close: Arc<tokio::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>>,
    excerpt_bytes: usize,
}

enum Request {
    Command {
        command: Command,
        /// The probe a `guest-exec` is for; its process is attributed to it.
        owner: Option<ProbeKind>,
        deadline: Instant,
        reply: oneshot::Sender<Result<Value, AgentError>>,
    },
}

/// A check gave up on a running guest process: keep polling it until reaped.
struct Handover {
    owner: ProbeKind,
    pid: i64,
}

impl GuestAgent {
    /// Starts the agent task on the current tokio runtime. It connects at once and keeps
    /// reconnecting; `excerpt_bytes` bounds the output kept from a guest process.
    pub fn spawn(
        connector: impl Connect,
        excerpt_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> GuestAgent {
        let (requests, inbox) = mpsc::channel(QUEUE_DEPTH);
        let (handovers, handover_inbox) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(LinkStatus {
            state: LinkState::Disconnected("not connected yet".into()),
            has_answered: false,
        });
        let (close_tx, close_rx) = oneshot::channel();
        let status_tx = Arc::new(status_tx);
        let task = AgentTask {
            connector: Box::new(connector),
            inbox,
            handovers: handover_inbox,
            status: Arc::clone(&status_tx),
            close: close_rx,
            link: Link::Disconnected {
                reason: "not connected yet".into(),
                next_attempt: Instant::now(),
                backoff: FIRST_BACKOFF,
            },
            in_flight: None,
            waiting: None,
            lost_execs: Vec::new(),
            orphans: BTreeMap::new(),
            next_id: fastrand::u64(1..(1 << 40)),
            has_answered: false,
            connections: 0,
            metrics,
        };
        let running = tokio::spawn(task.run());
        // A bug that panics the task must not leave the probes reading a stale "ready".
        tokio::spawn(async move {
            if let Err(error) = running.await
                && error.is_panic()
            {
                tracing::error!("the agent client failed; probes will fail until restart");
                status_tx.send_modify(|status| {
                    status.state = LinkState::Disconnected(
                        "internal error: the agent client failed (see the log)".into(),
                    );
                });
            }
        });
        GuestAgent {
            requests,
            handovers,
            status,
            close: Arc::new(tokio::sync::Mutex::new(Some(close_tx))),
            excerpt_bytes,
        }
    }

    /// The task's current view of the link.
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// `guest-ping`.
    pub async fn ping(&self, deadline: Instant) -> Result<(), AgentError> {
        self.call(Command::Ping, None, deadline).await.map(|_| ())
    }

    /// `guest-exec` of `command` for `owner`'s probe; returns the guest pid. Refused with
    /// [`AgentError::PreviousStillRunning`] while an earlier process of `owner` runs.
    pub async fn exec(
        &self,
        owner: ProbeKind,
        command: &ExecCommand,
        deadline: Instant,
    ) -> Result<i64, AgentError> {
        let request = Command::Exec {
            path: command.path.clone(),
            args: command.args.clone(),
        };
        let value = self.call(request, Some(owner), deadline).await?;
        protocol::parse_exec_started(&value).map_err(AgentError::Protocol)
    }

    /// `guest-exec-status` of `pid`, with output cut to the excerpt size.
    pub async fn exec_status(&self, pid: i64, deadline: Instant) -> Result<ExecStatus, AgentError> {
        let value = self
            .call(Command::ExecStatus { pid }, None, deadline)
            .await?;
        protocol::parse_exec_status(&value, self.excerpt_bytes).map_err(AgentError::Protocol)
    }

    /// Hands a still-running guest process over to the task, which polls it until it exits.
    /// Requests are handled in order, so a later `exec` for `owner` sees it.
    pub fn abandon(&self, owner: ProbeKind, pid: i64) {
        // Fails only when the task is gone, and then nothing starts processes any more.
        let _ = self.handovers.send(Handover { owner, pid });
    }

    /// Closes the connection gracefully and stops the task. Later calls fail as unavailable.
    pub async fn close(&self) {
        let Some(close) = self.close.lock().await.take() else {
            return;
        };
        let (done_tx, done_rx) = oneshot::channel();
        if close.send(done_tx).is_ok() {
            let _ = done_rx.await;
        }
    }

    async fn call(
        &self,
        command: Command,
        owner: Option<ProbeKind>,
        deadline: Instant,
    ) -> Result<Value, AgentError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Command {
            command,
            owner,
            deadline,
            reply,
        };
        let stopped = || AgentError::Unavailable("the gateway's agent client has stopped".into());
        match timeout_at(deadline, self.requests.send(request)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => return Err(self.timeout_error()),
        }
        match timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) if Instant::now() < deadline => Err(stopped()),
            Ok(Err(_)) | Err(_) => Err(self.timeout_error()),
        }
    }

    fn timeout_error(&self) -> AgentError {
        match &self.status.borrow().state {
            LinkState::Disconnected(reason) => AgentError::Unavailable(reason.clone()),
            LinkState::Syncing => AgentError::Timeout { agent_silent: true },
            LinkState::Ready => AgentError::Timeout {
                agent_silent: false,
            },
        }
    }
}

/// The connection, while there is one.
struct Connection {
    reader: FrameReader<ReadHalf<BoxStream>>,
    writer: WriteHalf<BoxStream>,
    sync: Sync,
    /// An unparsable line arrived while a command was in flight: resync after it.
    resync_after_reply: bool,
    /// The reconnect backoff in force when this connection was made; it is reset only
    /// once the agent answers, so a peer that accepts and hangs up at once is not
    /// reconnected to in a hot loop.
    backoff: Duration,
    answered: bool,
    /// A command (not only a resync) was answered on this connection.
    served: bool,
    connected_at: Instant,
    /// An unparsable line was logged at warn on this connection already.
    warned: bool,
}

/// Whether the stream is in step with the agent.
enum Sync {
    InStep,
    /// Resyncs sent and not answered yet, newest last; the next is sent `interval` after
    /// the last one (backing off, so a hung agent gets a slow trickle, not a backlog).
    Pending {
        ids: Vec<u64>,
        last_sent: Instant,
        interval: Duration,
    },
}

enum Link {
    Disconnected {
        reason: String,
        next_attempt: Instant,
        backoff: Duration,
    },
    Connected(Box<Connection>),
}

/// The command on the wire.
struct InFlight {
    id: u64,
    command: Command,
    owner: Option<ProbeKind>,
    deadline: Instant,
    /// None for the task's own polls of abandoned processes.
    reply: Option<oneshot::Sender<Result<Value, AgentError>>>,
}

/// A request held until the stream is back in step.
struct Waiting {
    command: Command,
    owner: Option<ProbeKind>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Value, AgentError>>,
}

/// A `guest-exec` whose reply did not come in time: its process may be running.
struct LostExec {
    id: u64,
    owner: ProbeKind,
}

/// A guest process whose check gave up on it.
struct Orphan {
    pid: i64,
    next_poll: Instant,
    interval: Duration,
}

struct AgentTask {
    connector: Box<dyn Connect>,
    inbox: mpsc::Receiver<Request>,
    handovers: mpsc::UnboundedReceiver<Handover>,
    status: Arc<watch::Sender<LinkStatus>>,
    close: oneshot::Receiver<oneshot::Sender<()>>,
    link: Link,
    in_flight: Option<InFlight>,
    waiting: Option<Waiting>,
    lost_execs: Vec<LostExec>,
    orphans: BTreeMap<ProbeKind, Orphan>,
    next_id: u64,
    has_answered: bool,
    /// Connections made so far (all after the first are reconnects).
    connections: u64,
    metrics: Arc<Metrics>,
}

/// What woke the task up.
enum Event {
    Close(Option<oneshot::Sender<()>>),
    Request(Option<Request>),
    Handover(Handover),
    Frame(Result<Frame, FramingError>),
    Timer,
}

impl AgentTask {
    async fn run(mut self) {
        tracing::debug!(agent = %self.connector.describe(), "agent client started");
        loop {
            self.publish();
            let event = self.next_event().await;
            match event {
                Event::Close(done) => {
                    self.shut_down().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Event::Request(None) => {
                    // Every handle is gone.
                    self.shut_down().await;
                    return;
                }
                Event::Request(Some(request)) => self.on_request(request).await,
                Event::Handover(handover) => self.on_handover(handover).await,
                Event::Frame(Ok(frame)) => self.on_frame(frame).await,
                Event::Frame(Err(error)) => self.on_stream_error(error).await,
                Event::Timer => self.on_timer().await,
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        let wake = self.next_wake();
        let take_requests = self.in_flight.is_none() && self.waiting.is_none();
        let reader = match &mut self.link {
            Link::Connected(connection) => Some(&mut connection.reader),
            Link::Disconnected { .. } => None,
        };
        let read = async {
            match reader {
                Some(reader) => reader.next_frame().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Deadlines before input: a peer flooding lines must not starve them.
            biased;
            done = &mut self.close => Event::Close(done.ok()),
            Some(handover) = self.handovers.recv() => Event::Handover(handover),
            _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => Event::Timer,
            frame = read => Event::Frame(frame),
            request = self.inbox.recv(), if take_requests => Event::Request(request),
        }
    }

    /// The earliest moment something is due.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut consider = |at: Instant| wake = Some(wake.map_or(at, |w| w.min(at)));
        if let Some(in_flight) = &self.in_flight {
            consider(in_flight.deadline);
        }
        if let Some(waiting) = &self.waiting {
            consider(waiting.deadline);
        }
        match &self.link {
            Link::Disconnected { next_attempt, .. } => consider(*next_attempt),
            Link::Connected(connection) => match &connection.sync {
                Sync::Pending {
                    last_sent,
                    interval,
                    ..
                } => {
                    if self.in_flight.is_none() {
                        consider(*last_sent + *interval)
                    }
                }
                Sync::InStep => {
                    if self.in_flight.is_none()
                        && let Some(poll) = self.orphans.values().map(|o| o.next_poll).min()
                    {
                        consider(poll);
                    }
                }
            },
        }
        wake
    }

    fn publish(&self) {
        let state = match &self.link {
            Link::Disconnected { reason, .. } => LinkState::Disconnected(reason.clone()),
            Link::Connected(connection) => match connection.sync {
                Sync::InStep => LinkState::Ready,
                Sync::Pending { .. } => LinkState::Syncing,
            },
        };
        // Abandoned processes, and timed-out guest-execs whose process may be running.
        let running = self.orphans.len()
            + self
                .lost_execs
                .iter()
                .filter(|lost| !self.orphans.contains_key(&lost.owner))
                .count();
        self.metrics
            .agent_up
            .set(i64::from(state == LinkState::Ready));
        self.metrics.guest_processes_running.set(running as i64);
        let status = LinkStatus {
            state,
            has_answered: self.has_answered,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }

    async fn on_handover(&mut self, Handover { owner, pid }: Handover) {
        tracing::info!(probe = %owner, pid, "guest process outlived its check; polling it until it exits");
        self.orphans.insert(
            owner,
            Orphan {
                pid,
                next_poll: Instant::now() + ORPHAN_POLL_FIRST,
                interval: ORPHAN_POLL_FIRST,
            },
        );
        self.advance().await;
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Command {
                command,
                owner,
                deadline,
                reply,
            } => {
                if reply.is_closed() || deadline <= Instant::now() {
                    // The caller has given up: send nothing to the agent on its behalf.
                    let _ = reply.send(Err(self.expired_error()));
                    return;
                }
                if let (Command::Exec { .. }, Some(owner)) = (&command, owner)
                    && let Some(pid) = self.running_process(owner)
                {
                    let _ = reply.send(Err(AgentError::PreviousStillRunning { pid }));
                    return;
                }
                self.waiting = Some(Waiting {
                    command,
                    owner,
                    deadline,
                    reply,
                });
                self.advance().await;
            }
        }
    }

    /// The answer to a request whose deadline passed before it could be sent: what kept
    /// it from the agent, as the caller's own timeout would tell it.
    fn expired_error(&self) -> AgentError {
        match &self.link {
            Link::Disconnected { reason, .. } => AgentError::Unavailable(reason.clone()),
            Link::Connected(connection) => AgentError::Timeout {
                agent_silent: !matches!(connection.sync, Sync::InStep),
            },
        }
    }

    /// The guest process of `owner` still running, if any: `Some(None)` when its pid is
    /// not known yet.
    fn running_process(&self, owner: ProbeKind) -> Option<Option<i64>> {
        if let Some(orphan) = self.orphans.get(&owner) {
            return Some(Some(orphan.pid));
        }
        self.lost_execs
            .iter()
            .any(|lost| lost.owner == owner)
            .then_some(None)
    }

    /// Moves the waiting request (or an orphan poll) forward as far as the link allows.
    async fn advance(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if matches!(self.link, Link::Disconnected { .. }) {
            if self.waiting.is_none() {
                return;
            }
            let due = match &self.link {
                Link::Disconnected { next_attempt, .. } => *next_attempt <= Instant::now(),
                Link::Connected(_) => false,
            };
            if due {
                self.connect().await;
            }
            if let Link::Disconnected { reason, .. } = &self.link {
                if let Some(waiting) = self.waiting.take() {
                    let _ = waiting
                        .reply
                        .send(Err(AgentError::Unavailable(reason.clone())));
                }
                return;
            }
        }
        let Link::Connected(connection) = &self.link else {
            return;
        };
        if !matches!(connection.sync, Sync::InStep) {
            return;
        }
        if let Some(waiting) = self.waiting.take() {
            if waiting.reply.is_closed() || waiting.deadline <= Instant::now() {
                let _ = waiting.reply.send(Err(self.expired_error()));
                return self.advance_orphans().await;
            }
            let in_flight = InFlight {
                id: self.take_id(),
                command: waiting.command,
                owner: waiting.owner,
                deadline: waiting.deadline,
                reply: Some(waiting.reply),
            };
            self.send(in_flight).await;
            return;
        }
        self.advance_orphans().await;
    }

    /// Polls the abandoned guest process that is due, if any.
    async fn advance_orphans(&mut self) {
        let now = Instant::now();
        let due = self
            .orphans
            .iter()
            .find(|(_, orphan)| orphan.next_poll <= now)
            .map(|(owner, orphan)| (*owner, orphan.pid));
        if let Some((owner, pid)) = due {
            let in_flight = InFlight {
                id: self.take_id(),
                command: Command::ExecStatus { pid },
                owner: Some(owner),
                deadline: now + ORPHAN_POLL_TIMEOUT,
                reply: None,
            };
            self.send(in_flight).await;
        }
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn send(&mut self, in_flight: InFlight) {
        let Link::Connected(connection) = &mut self.link else {
            return;
        };
        let line = in_flight.command.encode(in_flight.id);
        let written = write_bounded(&mut connection.writer, &line).await;
        self.in_flight = Some(in_flight);
        if let Err(reason) = written {
            self.disconnect(format!("write failed: {reason}"), Some(HOSTILE_DRAIN))
                .await;
        }
    }

    async fn connect(&mut self) {
        let Link::Disconnected {
            backoff, reason, ..
        } = &mut self.link
        else {
            return;
        };
        let backoff = *backoff;
        let target = self.connector.describe();
        // What a caller timing out meanwhile is told (a vsock connect can take a while).
        let previous = reason.clone();
        *reason = format!("still connecting to {target} (before: {previous})");
        self.publish();
        let result = timeout(CONNECT_TIMEOUT, self.connector.connect()).await;
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                return self.connect_failed(
                    format!("cannot connect to {target}: {error}"),
                    backoff,
                    &previous,
                );
            }
            Err(_) => {
                return self.connect_failed(
                    format!("cannot connect to {target}: no answer within {CONNECT_TIMEOUT:?}"),
                    backoff,
                    &previous,
                );
            }
        };
        if self.connections > 0 {
            self.metrics.agent_reconnects.inc();
        }
        self.connections += 1;
        let (reader, writer) = tokio::io::split(stream);
        tracing::debug!(agent = %target, "connected; resyncing");
        self.link = Link::Connected(Box::new(Connection {
            reader: FrameReader::new(reader),
            writer,
            sync: Sync::Pending {
                ids: Vec::new(),
                last_sent: Instant::now(),
                interval: RESYNC_RESEND,
            },
            connected_at: Instant::now(),
            served: false,
            resync_after_reply: false,
            backoff,
            answered: false,
            warned: false,
        }));
        self.send_sync().await;
    }

    /// Logs a failure once, not on every retry: `previous` is the reason before this try.
    fn connect_failed(&mut self, reason: String, backoff: Duration, previous: &str) {
        if previous != reason {
            tracing::warn!(%reason, "agent unavailable");
        }
        self.link = Link::Disconnected {
            reason,
            next_attempt: Instant::now() + backoff,
            backoff: (backoff * 2).min(MAX_BACKOFF),
        };
    }

    /// Sends a resync and marks the stream out of step until it is answered.
    async fn send_sync(&mut self) {
        let Link::Connected(connection) = &mut self.link else {
            return;
        };
        self.metrics.agent_resyncs.inc();
        let sync_id = protocol::random_sync_id();
        let (mut ids, interval) = match std::mem::replace(&mut connection.sync, Sync::InStep) {
            Sync::Pending { ids, interval, .. } if !ids.is_empty() => {
                (ids, (interval * 2).min(RESYNC_RESEND_MAX))
            }
            Sync::Pending { ids, .. } => (ids, RESYNC_RESEND),
            Sync::InStep => (Vec::new(), RESYNC_RESEND),
        };
        if ids.len() >= MAX_PENDING_SYNCS {
            ids.remove(0);
        }
        ids.push(sync_id);
        connection.resync_after_reply = false;
        connection.sync = Sync::Pending {
            ids,
            last_sent: Instant::now(),
            interval,
        };
        if let Err(reason) =
            write_bounded(&mut connection.writer, &protocol::encode_sync(sync_id)).await
        {
            self.disconnect(format!("write failed: {reason}"), Some(HOSTILE_DRAIN))
                .await;
        }
    }

    async fn on_frame(&mut self, frame: Frame) {
        let line = match frame {
            Frame::Delimiter => return, // A sync reply follows; matched by its value.
            Frame::Oversized => {
                tracing::warn!("agent reply too large to keep; resyncing");
                if let Some(in_flight) = self.in_flight.take() {
                    self.finish(
                        in_flight,
                        Err(AgentError::Protocol("reply too large".into())),
                    );
                }
                return self.resync_if_in_step().await;
            }
            Frame::Line(line) => line,
        };
        let reply = match protocol::parse_reply(&line) {
            Ok(reply) => reply,
            Err(unparsable) => {
                // Once per connection at warn: a peer flooding garbage must not flood the log.
                let first = match &mut self.link {
                    Link::Connected(connection) => !std::mem::replace(&mut connection.warned, true),
                    Link::Disconnected { .. } => false,
                };
                if first {
                    tracing::warn!(%unparsable, "unparsable line from the agent; resyncing");
                } else {
                    tracing::debug!(%unparsable, "unparsable line from the agent");
                }
                if self.in_flight.is_none() {
                    self.resync_if_in_step().await;
                } else if let Link::Connected(connection) = &mut self.link {
                    // Our reply may still come: resync once it is answered or times out.
                    connection.resync_after_reply = true;
                }
                return;
            }
        };
        if self.take_sync_reply(&reply.outcome) {
            self.on_in_step().await;
            return;
        }
        if self.adopt_if_lost_exec(&reply) {
            return;
        }
        if let Some(id) = reply.id
            && self.in_flight.as_ref().is_some_and(|f| f.id == id)
        {
            if let Some(in_flight) = self.in_flight.take() {
                self.has_answered = true;
                if let Link::Connected(connection) = &mut self.link {
                    connection.served = true;
                }
                let result = reply
                    .outcome
                    .map_err(|e| AgentError::from_reply(in_flight.command.name(), e));
                self.finish(in_flight, result);
            }
            if let Link::Connected(connection) = &mut self.link
                && std::mem::take(&mut connection.resync_after_reply)
            {
                return self.force_resync().await;
            }
            self.advance().await;
            return;
        }
        tracing::debug!(line = %protocol::preview(&line), "dropped a stale reply");
    }

    /// True if `outcome` answers one of the pending resyncs.
    fn take_sync_reply(&mut self, outcome: &Result<Value, protocol::ErrorReply>) -> bool {
        let Link::Connected(connection) = &mut self.link else {
            return false;
        };
        let Sync::Pending { ids, .. } = &connection.sync else {
            return false;
        };
        let Ok(Value::Number(number)) = outcome else {
            return false;
        };
        if !number.as_u64().is_some_and(|n| ids.contains(&n)) {
            return false;
        }
        connection.sync = Sync::InStep;
        true
    }

    async fn on_in_step(&mut self) {
        if !self.has_answered {
            tracing::info!(agent = %self.connector.describe(), "agent answered");
        }
        self.has_answered = true;
        if let Link::Connected(connection) = &mut self.link {
            connection.answered = true;
        }
        // Replies are in order: a lost guest-exec reply not seen before the resync reply
        // will never come (the agent restarted, or the reply went with an old connection).
        for lost in self.lost_execs.drain(..) {
            tracing::warn!(probe = %lost.owner, "a timed-out guest-exec never answered; if it started a process, the gateway cannot track it");
        }
        if let Some(in_flight) = self.in_flight.take() {
            // The command was answered before the resync or never will be.
            self.finish(
                in_flight,
                Err(AgentError::Timeout {
                    agent_silent: false,
                }),
            );
        }
        self.advance().await;
    }

    fn adopt_late_exec(&mut self, owner: ProbeKind, outcome: &Result<Value, protocol::ErrorReply>) {
        match outcome.as_ref().map(protocol::parse_exec_started) {
            Ok(Ok(pid)) => {
                tracing::info!(probe = %owner, pid, "late guest-exec reply: tracking its process");
                self.orphans.insert(
                    owner,
                    Orphan {
                        pid,
                        next_poll: Instant::now(),
                        interval: ORPHAN_POLL_FIRST,
                    },
                );
            }
            _ => tracing::debug!(probe = %owner, "late guest-exec reply started nothing"),
        }
    }

    /// Delivers the result of the command that was in flight.
    fn finish(&mut self, mut in_flight: InFlight, result: Result<Value, AgentError>) {
        let outcome = match &result {
            Ok(_) => CommandOutcome::ok,
            Err(AgentError::Timeout { .. }) => CommandOutcome::timeout,
            Err(AgentError::Unavailable(_)) => CommandOutcome::unavailable,
            Err(_) => CommandOutcome::error,
        };
        self.metrics
            .record_command(in_flight.command.name(), outcome);
        let Some(reply) = in_flight.reply.take() else {
            return self.on_orphan_status(in_flight, result);
        };
        // A caller that gave up at its deadline just before its guest-exec was answered:
        // the process runs all the same, so it is tracked rather than forgotten.
        if let (Err(Ok(value)), Command::Exec { .. }, Some(owner)) =
            (reply.send(result), &in_flight.command, in_flight.owner)
        {
            self.adopt_late_exec(owner, &Ok(value));
        }
    }

    fn on_orphan_status(&mut self, in_flight: InFlight, result: Result<Value, AgentError>) {
        let (Some(owner), Command::ExecStatus { pid }) = (in_flight.owner, &in_flight.command)
        else {
            return;
        };
        let pid = *pid;
        let gone = match &result {
            Ok(value) => match protocol::parse_exec_status(value, 256) {
                Ok(status) if status.exited => {
                    tracing::info!(probe = %owner, pid, exit_code = status.exit_code, signal = status.signal, "abandoned guest process exited");
                    true
                }
                Ok(_) => false,
                Err(_) => true,
            },
            // Reaped already, unknown to a restarted agent, or no longer askable.
            Err(
                AgentError::Rejected { .. }
                | AgentError::Disabled { .. }
                | AgentError::CommandNotFound { .. },
            ) => {
                tracing::info!(probe = %owner, pid, "abandoned guest process is gone");
                true
            }
            Err(_) => false,
        };
        if gone {
            self.orphans.remove(&owner);
        } else if let Some(orphan) = self.orphans.get_mut(&owner) {
            orphan.interval = (orphan.interval * 2).min(ORPHAN_POLL_MAX);
            orphan.next_poll = Instant::now() + orphan.interval;
        }
    }

    async fn resync_if_in_step(&mut self) {
        if let Link::Connected(connection) = &self.link
            && matches!(connection.sync, Sync::InStep)
        {
            self.send_sync().await;
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(in_flight) = self.in_flight.take_if(|f| f.deadline <= now) {
            tracing::debug!(
                command = in_flight.command.name(),
                "no reply in time; resyncing"
            );
            if let (Command::Exec { .. }, Some(owner), Some(_)) =
                (&in_flight.command, in_flight.owner, &in_flight.reply)
            {
                self.lost_execs.push(LostExec {
                    id: in_flight.id,
                    owner,
                });
            }
            self.finish(
                in_flight,
                Err(AgentError::Timeout {
                    agent_silent: false,
                }),
            );
            self.force_resync().await;
        }
        if let Some(waiting) = self.waiting.take_if(|w| w.deadline <= now) {
            let _ = waiting
                .reply
                .send(Err(AgentError::Timeout { agent_silent: true }));
        }
        match &self.link {
            Link::Connected(connection) => {
                let resend = match &connection.sync {
                    Sync::Pending {
                        last_sent,
                        interval,
                        ..
                    } => *last_sent + *interval <= now,
                    Sync::InStep => false,
                };
                if resend && self.in_flight.is_none() {
                    self.send_sync().await;
                }
            }
            Link::Disconnected { next_attempt, .. } => {
                if *next_attempt <= now {
                    self.connect().await;
                }
            }
        }
        self.advance().await;
    }

    /// Sends a resync now, whatever the sync state: the stream is out of step.
    async fn force_resync(&mut self) {
        if let Link::Connected(connection) = &mut self.link {
            if matches!(connection.sync, Sync::InStep) {
                connection.sync = Sync::Pending {
                    ids: Vec::new(),
                    last_sent: Instant::now(),
                    interval: RESYNC_RESEND,
                };
            }
            self.send_sync().await;
        }
    }

    async fn on_stream_error(&mut self, error: FramingError) {
        let reason = format!("connection lost: {error}");
        if matches!(error, FramingError::EndlessLine) {
            tracing::warn!(%reason, "dropping a peer that sends an endless line");
            self.disconnect(reason, Some(HOSTILE_DRAIN)).await;
        } else {
            tracing::warn!(%reason, "agent connection lost");
            // The peer closed or broke the stream: nothing is left to drain.
            self.disconnect(reason, None).await;
        }
    }

    /// Ends the connection (gracefully within `drain`, if given), fails the command in
    /// flight and schedules the reconnect: at once if the agent had answered on this
    /// connection, else after the backoff.
    async fn disconnect(&mut self, reason: String, drain: Option<Duration>) {
        let now = Instant::now();
        let (next_attempt, backoff, connection) = match std::mem::replace(
            &mut self.link,
            Link::Disconnected {
                reason: reason.clone(),
                next_attempt: now,
                backoff: FIRST_BACKOFF,
            },
        ) {
            Link::Connected(connection)
                if connection.answered
                    && (connection.served
                        || connection.connected_at.elapsed() >= STABLE_CONNECTION) =>
            {
                (now, FIRST_BACKOFF, Some(connection))
            }
            Link::Connected(connection) => (
                now + connection.backoff,
                (connection.backoff * 2).min(MAX_BACKOFF),
                Some(connection),
            ),
            Link::Disconnected {
                next_attempt,
                backoff,
                ..
            } => (next_attempt, backoff, None),
        };
        self.link = Link::Disconnected {
            reason: reason.clone(),
            next_attempt,
            backoff,
        };
        if let Some(in_flight) = self.in_flight.take() {
            if let (Command::Exec { .. }, Some(owner), Some(_)) =
                (&in_flight.command, in_flight.owner, &in_flight.reply)
            {
                self.lost_execs.push(LostExec {
                    id: in_flight.id,
                    owner,
                });
            }
            self.finish(in_flight, Err(AgentError::Unavailable(reason)));
        }
        if let (Some(connection), Some(drain)) = (connection, drain) {
            for line in close_gracefully(*connection, drain).await {
                if let Ok(reply) = protocol::parse_reply(&line) {
                    self.adopt_if_lost_exec(&reply);
                }
            }
        }
    }

    /// Tracks the process of a `guest-exec` answered too late, if `reply` is that answer.
    fn adopt_if_lost_exec(&mut self, reply: &protocol::Reply) -> bool {
        let Some(at) = reply
            .id
            .and_then(|id| self.lost_execs.iter().position(|lost| lost.id == id))
        else {
            return false;
        };
        let lost = self.lost_execs.remove(at);
        self.adopt_late_exec(lost.owner, &reply.outcome);
        true
    }

    async fn shut_down(&mut self) {
        let reason = "the gateway is shutting down".to_string();
        if let Some(in_flight) = self.in_flight.take() {
            self.finish(in_flight, Err(AgentError::Unavailable(reason.clone())));
        }
        if let Some(waiting) = self.waiting.take() {
            let _ = waiting
                .reply
                .send(Err(AgentError::Unavailable(reason.clone())));
        }
        if let Link::Connected(connection) = std::mem::replace(
            &mut self.link,
            Link::Disconnected {
                reason,
                next_attempt: far_future(),
                backoff: MAX_BACKOFF,
            },
        ) {
            let _ = close_gracefully(*connection, CLOSE_DRAIN).await;
            tracing::debug!("agent connection closed");
        }
        self.publish();
    }
}

async fn write_bounded<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8]) -> Result<(), String> {
    match timeout(WRITE_TIMEOUT, async {
        writer.write_all(line).await?;
        writer.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("the agent stopped reading for {WRITE_TIMEOUT:?}")),
    }
}

/// Shuts down writing and reads until the agent closes, within `bound`: a listening
/// qemu-ga exits if its client closes while a reply is unread. Returns the lines drained
/// (at most [`MAX_DRAINED_LINES`]), which may hold a late `guest-exec` reply.
async fn close_gracefully(mut connection: Connection, bound: Duration) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let drained = timeout(bound, async {
        let _ = connection.writer.shutdown().await;
        loop {
            match connection.reader.next_frame().await {
                Ok(Frame::Line(line)) if lines.len() < MAX_DRAINED_LINES => lines.push(line),
                Ok(_) | Err(FramingError::EndlessLine) => continue,
                Err(_) => return,
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "the agent did not close its side within {bound:?}; dropping the connection"
        );
    }
    lines
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
