//! [`QgaLink`]: the handle to the link's task, and the [`AgentBackend`] of the stream
//! transports. A call queues its command with its deadline and waits for the answer; the
//! task does the rest.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout_at};

use super::{Link, LinkTask, QUEUE_DEPTH, RECONNECT, Request};
use crate::agent::backend::{
    AgentBackend, Call, CallFuture, CloseFuture, LateReplies, LateReply, LinkState, LinkStatus,
};
use crate::agent::error::AgentError;
use crate::agent::transport::Connect;
use crate::metrics::Metrics;

/// Handle to the link's task. Cheap to clone; the task ends when [`QgaLink::close`] is
/// called or every handle is dropped (then it closes the connection gracefully too).
#[derive(Clone)]
pub(crate) struct QgaLink {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<LinkStatus>,
    close: Arc<tokio::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>>,
}

impl QgaLink {
    /// Starts the link's task on the current tokio runtime. It connects at once and keeps
    /// reconnecting.
    pub(crate) fn spawn(connector: impl Connect, metrics: Arc<Metrics>) -> QgaLink {
        let (requests, inbox) = mpsc::channel(QUEUE_DEPTH);
        let (status_tx, status) = watch::channel(LinkStatus {
            state: LinkState::Disconnected("not connected yet".into()),
            has_answered: false,
        });
        let (close_tx, close_rx) = oneshot::channel();
        let status_tx = Arc::new(status_tx);
        let task = LinkTask {
            connector: Box::new(connector),
            inbox,
            status: Arc::clone(&status_tx),
            close: close_rx,
            link: Link::Disconnected {
                reason: "not connected yet".into(),
                next_attempt: Instant::now(),
                reconnect: RECONNECT,
            },
            in_flight: None,
            waiting: None,
            late: Vec::new(),
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
        QgaLink {
            requests,
            status,
            close: Arc::new(tokio::sync::Mutex::new(Some(close_tx))),
        }
    }

    /// The error of a call whose deadline passed on the caller's side: what kept it from
    /// the agent, as the link last saw it.
    fn timeout_error(status: &watch::Receiver<LinkStatus>) -> AgentError {
        match &status.borrow().state {
            LinkState::Disconnected(reason) => AgentError::Unavailable(reason.clone()),
            LinkState::Syncing => AgentError::Timeout { agent_silent: true },
            LinkState::Ready => AgentError::Timeout {
                agent_silent: false,
            },
        }
    }
}

impl AgentBackend for QgaLink {
    fn call(&self, call: Call) -> CallFuture {
        let requests = self.requests.clone();
        let status = self.status.clone();
        Box::pin(async move {
            let Call {
                command,
                deadline,
                late,
            } = call;
            let stopped =
                || AgentError::Unavailable("the gateway's agent client has stopped".into());
            // A place in the queue first, so that a request that never gets one is known
            // not to have been sent.
            let permit = match timeout_at(deadline, requests.reserve()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(not_queued(late, stopped())),
                Err(_) => return Err(not_queued(late, QgaLink::timeout_error(&status))),
            };
            let (reply, answer) = oneshot::channel();
            permit.send(Request {
                command,
                deadline,
                reply,
                late,
            });
            match timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) if Instant::now() < deadline => Err(stopped()),
                Ok(Err(_)) | Err(_) => Err(QgaLink::timeout_error(&status)),
            }
        })
    }

    fn late_replies(&self) -> LateReplies {
        LateReplies::Delivered
    }

    fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    fn close(&self) -> CloseFuture<'_> {
        Box::pin(async move {
            let Some(close) = self.close.lock().await.take() else {
                return;
            };
            let (done_tx, done_rx) = oneshot::channel();
            if close.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        })
    }
}

/// The error of a request that never reached the link's queue; its late sink hears that.
fn not_queued(late: Option<oneshot::Sender<LateReply>>, error: AgentError) -> AgentError {
    if let Some(sink) = late {
        let _ = sink.send(LateReply::NotSent);
    }
    error
}
