//! The link: QGA over one long-lived stream (unix socket, vsock, hybrid vsock), owned by
//! one task; [`QgaLink`] is its handle and the [`AgentBackend`] of those transports.
//!
//! Rules the task keeps, all of them from how qemu-ga behaves (docs/qemu-guest-agent.md: "Request ids", "Ordering
//! and late replies", "Resync", "Closing the connection"):
//! - Exactly one command is on the wire; requests queue in a bounded channel.
//! - Every command carries an id; a reply with another id is stale and dropped, except the
//!   late reply of a command whose caller left a late sink ([`Call::late`]), which goes there.
//! - After connecting, after a timeout and after an unparsable line, the stream is resynced
//!   ([`sync`]) before the next command is sent. Replies come in order, so a late reply not
//!   seen before a resync's answer will never come.
//! - The connection is closed gracefully ([`connection`]).
//! - An absent agent is not fatal: reconnects back off exponentially up to one second, and
//!   requests meanwhile fail at once with the last connect error.
//!
//! What a command is for, and what its reply means, is not the link's business: guest
//! processes belong to [`super::processes`].

mod connection;
mod handle;
mod sync;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};

use self::connection::Connection;
pub(super) use self::handle::QgaLink;
use self::sync::{Resync, Sync};
use super::backend::{CallResult, LateReply, LinkState, LinkStatus};
use super::backoff::Backoff;
use super::error::AgentError;
use super::framing::{Frame, FramingError};
use super::protocol::{self, Command, Reply};
use super::transport::{CONNECT_TIMEOUT, Connect};
use crate::metrics::{CommandOutcome, Metrics};

/// Requests waiting for the link; callers beyond this wait (within their deadline).
const QUEUE_DEPTH: usize = 64;
/// Reconnect attempts to an agent that is away: 50 ms, doubling up to one second.
const RECONNECT: Backoff = Backoff::doubling(Duration::from_millis(50), Duration::from_secs(1));
/// A connection that served a command, or lasted this long with the agent answering, was
/// a good one: after it ends, reconnect at once. A peer that answers a resync and hangs up
/// sooner gets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// How long a graceful close may drain the agent's remaining replies.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// The same for a peer that broke the protocol: it gets less patience.
const HOSTILE_DRAIN: Duration = Duration::from_millis(200);

/// A command for the task, with where its answers go.
struct Request {
    command: Command,
    deadline: Instant,
    reply: oneshot::Sender<CallResult>,
    late: Option<oneshot::Sender<LateReply>>,
}

enum Link {
    Disconnected {
        reason: String,
        next_attempt: Instant,
        reconnect: Backoff,
    },
    Connected(Box<Connection>),
}

/// The command on the wire.
struct InFlight {
    id: u64,
    command: Command,
    deadline: Instant,
    reply: oneshot::Sender<CallResult>,
    late: Option<oneshot::Sender<LateReply>>,
}

/// A command whose caller stopped waiting, and whose late reply someone wants.
struct LateWait {
    id: u64,
    command: &'static str,
    sink: oneshot::Sender<LateReply>,
}

struct LinkTask {
    connector: Box<dyn Connect>,
    inbox: mpsc::Receiver<Request>,
    status: Arc<watch::Sender<LinkStatus>>,
    close: oneshot::Receiver<oneshot::Sender<()>>,
    link: Link,
    in_flight: Option<InFlight>,
    /// A request held until the stream is back in step.
    waiting: Option<Request>,
    late: Vec<LateWait>,
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
    Frame(Result<Frame, FramingError>),
    Timer,
}

impl LinkTask {
    async fn run(mut self) {
        tracing::debug!(agent = %self.connector.describe(), "agent client started");
        loop {
            self.publish();
            match self.next_event().await {
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
                Event::Frame(Ok(frame)) => self.on_frame(frame).await,
                Event::Frame(Err(error)) => self.on_stream_error(error).await,
                Event::Timer => self.on_timer().await,
            }
        }
    }

    async fn next_event(&mut self) -> Event {
        let wake = self.next_wake();
        let take_requests = self.in_flight.is_none() && self.waiting.is_none();
        let read = async {
            match &mut self.link {
                Link::Connected(connection) => connection.reader.next_frame().await,
                Link::Disconnected { .. } => std::future::pending().await,
            }
        };
        tokio::select! {
            // Deadlines before input: a peer flooding lines must not starve them.
            biased;
            done = &mut self.close => Event::Close(done.ok()),
            _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => Event::Timer,
            frame = read => Event::Frame(frame),
            request = self.inbox.recv(), if take_requests => Event::Request(request),
        }
    }

    /// The earliest moment something is due; `None` when nothing is (an idle link in step
    /// sleeps until a request or a line comes).
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
            // The link keeps reconnecting on its own while the agent is away, so that the
            // next probe finds it up rather than waiting for a connect.
            Link::Disconnected { next_attempt, .. } => consider(*next_attempt),
            Link::Connected(connection) => {
                if let (Sync::Pending(resync), None) = (&connection.sync, &self.in_flight) {
                    consider(resync.resend_due());
                }
            }
        }
        wake
    }

    fn publish(&self) {
        let state = match &self.link {
            Link::Disconnected { reason, .. } => LinkState::Disconnected(reason.clone()),
            Link::Connected(connection) => match connection.sync {
                Sync::InStep => LinkState::Ready,
                Sync::Pending(_) => LinkState::Syncing,
            },
        };
        self.metrics
            .agent_up
            .set(i64::from(state == LinkState::Ready));
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

    async fn on_request(&mut self, request: Request) {
        if request.reply.is_closed() || request.deadline <= Instant::now() {
            // The caller has given up: send nothing to the agent on its behalf.
            let error = self.expired_error();
            return not_sent(request, error);
        }
        self.waiting = Some(request);
        self.advance().await;
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

    /// Moves the waiting request forward as far as the link allows.
    async fn advance(&mut self) {
        if self.in_flight.is_some() || self.waiting.is_none() {
            return;
        }
        if let Link::Disconnected { next_attempt, .. } = &self.link {
            if *next_attempt <= Instant::now() {
                self.connect().await;
            }
            if let Link::Disconnected { reason, .. } = &self.link {
                let reason = reason.clone();
                if let Some(waiting) = self.waiting.take() {
                    not_sent(waiting, AgentError::Unavailable(reason));
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
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        if waiting.reply.is_closed() || waiting.deadline <= Instant::now() {
            let error = self.expired_error();
            return not_sent(waiting, error);
        }
        self.next_id += 1;
        let in_flight = InFlight {
            id: self.next_id,
            command: waiting.command,
            deadline: waiting.deadline,
            reply: waiting.reply,
            late: waiting.late,
        };
        self.send(in_flight).await;
    }

    async fn send(&mut self, in_flight: InFlight) {
        let Link::Connected(connection) = &mut self.link else {
            return not_sent(
                Request {
                    command: in_flight.command,
                    deadline: in_flight.deadline,
                    reply: in_flight.reply,
                    late: in_flight.late,
                },
                AgentError::Unavailable("not connected".into()),
            );
        };
        let line = in_flight.command.encode(in_flight.id);
        let written = connection.write(&line).await;
        self.in_flight = Some(in_flight);
        if let Err(reason) = written {
            self.disconnect(format!("write failed: {reason}"), Some(HOSTILE_DRAIN))
                .await;
        }
    }

    async fn connect(&mut self) {
        let Link::Disconnected {
            reconnect, reason, ..
        } = &mut self.link
        else {
            return;
        };
        let reconnect = reconnect.clone();
        let target = self.connector.describe();
        // What a caller timing out meanwhile is told (a vsock connect can take a while).
        let previous = reason.clone();
        *reason = format!("still connecting to {target} (before: {previous})");
        self.publish();
        let stream = match timeout(CONNECT_TIMEOUT, self.connector.connect()).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let reason = format!("cannot connect to {target}: {error}");
                return self.connect_failed(reason, reconnect, &previous);
            }
            Err(_) => {
                let reason =
                    format!("cannot connect to {target}: no answer within {CONNECT_TIMEOUT:?}");
                return self.connect_failed(reason, reconnect, &previous);
            }
        };
        if self.connections > 0 {
            self.metrics.agent_reconnects.inc();
        }
        self.connections += 1;
        tracing::debug!(agent = %target, "connected; resyncing");
        self.link = Link::Connected(Box::new(Connection::new(stream, reconnect)));
        self.send_sync().await;
    }

    /// Logs a failure once, not on every retry: `previous` is the reason before this try.
    fn connect_failed(&mut self, reason: String, mut reconnect: Backoff, previous: &str) {
        if previous != reason {
            tracing::warn!(%reason, "agent unavailable");
        }
        self.link = Link::Disconnected {
            reason,
            next_attempt: Instant::now() + reconnect.next_wait(),
            reconnect,
        };
    }

    /// Sends a resync and marks the stream out of step until it is answered.
    async fn send_sync(&mut self) {
        let Link::Connected(connection) = &mut self.link else {
            return;
        };
        self.metrics.agent_resyncs.inc();
        let sync_id = protocol::random_sync_id();
        if let Sync::InStep = connection.sync {
            connection.sync = Sync::Pending(Resync::new());
        }
        if let Sync::Pending(resync) = &mut connection.sync {
            resync.sent(sync_id);
        }
        connection.resync_after_reply = false;
        if let Err(reason) = connection.write(&protocol::encode_sync(sync_id)).await {
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
                    let error = AgentError::Protocol("reply too large".into());
                    self.finish(in_flight, Err(error));
                }
                return self.resync_if_in_step().await;
            }
            Frame::Line(line) => line,
        };
        let reply = match protocol::parse_reply(&line) {
            Ok(reply) => reply,
            Err(unparsable) => return self.on_unparsable(unparsable).await,
        };
        if self.take_sync_reply(&reply) {
            return self.on_in_step().await;
        }
        if self.deliver_late(&reply) {
            return;
        }
        let Some(in_flight) = self
            .in_flight
            .take_if(|in_flight| reply.id == Some(in_flight.id))
        else {
            tracing::debug!(line = %protocol::preview(&line), "dropped a stale reply");
            return;
        };
        self.has_answered = true;
        if let Link::Connected(connection) = &mut self.link {
            connection.served = true;
        }
        let name = in_flight.command.name();
        let result = reply
            .outcome
            .map_err(|error| AgentError::from_reply(name, error));
        self.finish(in_flight, result);
        if let Link::Connected(connection) = &mut self.link
            && std::mem::take(&mut connection.resync_after_reply)
        {
            return self.force_resync().await;
        }
        self.advance().await;
    }

    async fn on_unparsable(&mut self, unparsable: protocol::Unparsable) {
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
    }

    /// True if `reply` answers one of the pending resyncs; the stream is then in step.
    fn take_sync_reply(&mut self, reply: &Reply) -> bool {
        let Link::Connected(connection) = &mut self.link else {
            return false;
        };
        let Sync::Pending(resync) = &connection.sync else {
            return false;
        };
        if !resync.is_answered_by(&reply.outcome) {
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
        if let Some(in_flight) = self.in_flight.take() {
            // The command was answered before the resync or never will be.
            let error = AgentError::Timeout {
                agent_silent: false,
            };
            self.finish(in_flight, Err(error));
        }
        // Replies are in order: a late reply not seen before the resync reply will never
        // come (the agent restarted, or the reply went with an old connection).
        for late in self.late.drain(..) {
            tracing::debug!(command = late.command, "a timed-out command never answered");
            let _ = late.sink.send(LateReply::Unanswered);
        }
        self.advance().await;
    }

    /// Hands `reply` to the late sink it belongs to, if any.
    fn deliver_late(&mut self, reply: &Reply) -> bool {
        let Some(at) = reply
            .id
            .and_then(|id| self.late.iter().position(|late| late.id == id))
        else {
            return false;
        };
        let late = self.late.remove(at);
        let result = reply
            .outcome
            .clone()
            .map_err(|error| AgentError::from_reply(late.command, error));
        tracing::debug!(command = late.command, "late reply delivered");
        let _ = late.sink.send(LateReply::Answered(result));
        true
    }

    /// Delivers the result of the command that was in flight. A caller that gave up just
    /// before its answer came has it passed to its late sink.
    fn finish(&mut self, in_flight: InFlight, result: CallResult) {
        let outcome = match &result {
            Ok(_) => CommandOutcome::ok,
            Err(AgentError::Timeout { .. }) => CommandOutcome::timeout,
            Err(AgentError::Unavailable(_)) => CommandOutcome::unavailable,
            Err(_) => CommandOutcome::error,
        };
        self.metrics
            .record_command(in_flight.command.name(), outcome);
        let answered = !matches!(
            result,
            Err(AgentError::Timeout { .. } | AgentError::Unavailable(_))
        );
        match (in_flight.reply.send(result), in_flight.late) {
            (Err(result), Some(sink)) if answered => {
                let _ = sink.send(LateReply::Answered(result));
            }
            // No answer: it may still come, to the late sink, until the stream is in step.
            (_, Some(sink)) if !answered => self.late.push(LateWait {
                id: in_flight.id,
                command: in_flight.command.name(),
                sink,
            }),
            _ => {}
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
            let error = AgentError::Timeout {
                agent_silent: false,
            };
            self.finish(in_flight, Err(error));
            self.force_resync().await;
        }
        if let Some(waiting) = self.waiting.take_if(|w| w.deadline <= now) {
            not_sent(waiting, AgentError::Timeout { agent_silent: true });
        }
        match &self.link {
            Link::Connected(connection) => {
                let resend = match &connection.sync {
                    Sync::Pending(resync) => resync.resend_due() <= now,
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
                connection.sync = Sync::Pending(Resync::new());
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
    /// flight and schedules the reconnect: at once if the agent had served on this
    /// connection, else after the backoff.
    async fn disconnect(&mut self, reason: String, drain: Option<Duration>) {
        let now = Instant::now();
        let previous = std::mem::replace(
            &mut self.link,
            Link::Disconnected {
                reason: reason.clone(),
                next_attempt: now,
                reconnect: RECONNECT,
            },
        );
        let connection = match previous {
            Link::Connected(connection) => {
                let good = connection.answered
                    && (connection.served
                        || connection.connected_at.elapsed() >= STABLE_CONNECTION);
                let (next_attempt, reconnect) = if good {
                    (now, RECONNECT)
                } else {
                    let mut reconnect = connection.reconnect.clone();
                    (now + reconnect.next_wait(), reconnect)
                };
                self.link = Link::Disconnected {
                    reason: reason.clone(),
                    next_attempt,
                    reconnect,
                };
                Some(connection)
            }
            disconnected @ Link::Disconnected { .. } => {
                self.link = disconnected;
                None
            }
        };
        if let Some(in_flight) = self.in_flight.take() {
            self.finish(in_flight, Err(AgentError::Unavailable(reason)));
        }
        if let (Some(connection), Some(drain)) = (connection, drain) {
            self.close_connection(*connection, drain).await;
        }
    }

    /// Closes `connection` gracefully within `bound`; a late reply among the lines drained
    /// still reaches its sink.
    async fn close_connection(&mut self, connection: Connection, bound: Duration) {
        for line in connection.close_gracefully(bound).await {
            if let Ok(reply) = protocol::parse_reply(&line) {
                self.deliver_late(&reply);
            }
        }
    }

    async fn shut_down(&mut self) {
        let reason = "the gateway is shutting down".to_string();
        if let Some(in_flight) = self.in_flight.take() {
            self.finish(in_flight, Err(AgentError::Unavailable(reason.clone())));
        }
        if let Some(waiting) = self.waiting.take() {
            not_sent(waiting, AgentError::Unavailable(reason.clone()));
        }
        if let Link::Connected(connection) = std::mem::replace(
            &mut self.link,
            Link::Disconnected {
                reason,
                next_attempt: far_future(),
                reconnect: RECONNECT,
            },
        ) {
            self.close_connection(*connection, CLOSE_DRAIN).await;
            tracing::debug!("agent connection closed");
        }
        for late in self.late.drain(..) {
            let _ = late.sink.send(LateReply::Unanswered);
        }
        self.publish();
    }
}

/// Answers a request that never reached the agent.
fn not_sent(request: Request, error: AgentError) {
    let _ = request.reply.send(Err(error));
    if let Some(sink) = request.late {
        let _ = sink.send(LateReply::NotSent);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}
