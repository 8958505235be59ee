//! Test support: an in-process guest agent over `tokio::io::duplex`, for the tests of
//! runners, background loops and probe sets, which need an agent to talk to but not a
//! real one. It answers resyncs at once, and every other command (`guest-ping`) with the
//! next scripted result after a fixed delay; it counts the commands it received and the
//! connections opened to it and still open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::agent::testing::{request_of, sync_reply};
use crate::agent::transport::{BoxStream, Connect, ConnectFuture};

/// An agent endpoint; `Arc<ScriptedAgent>` is its connector.
pub(crate) struct ScriptedAgent {
    /// The result of each command in turn (an error reply for `false`); `true` once empty.
    results: Mutex<VecDeque<bool>>,
    /// How long each answer to a command takes.
    delay: Duration,
    /// Commands received, resyncs left out.
    received: watch::Sender<usize>,
    /// Connections opened so far, and those still open.
    connections: watch::Sender<(usize, usize)>,
}

impl ScriptedAgent {
    /// An agent that answers each command at once with the next of `results`.
    pub(crate) fn new(results: &[bool]) -> Arc<ScriptedAgent> {
        ScriptedAgent::build(results, Duration::ZERO)
    }

    /// An agent that answers every command with success, `delay` after receiving it.
    pub(crate) fn answering_after(delay: Duration) -> Arc<ScriptedAgent> {
        ScriptedAgent::build(&[], delay)
    }

    fn build(results: &[bool], delay: Duration) -> Arc<ScriptedAgent> {
        Arc::new(ScriptedAgent {
            results: Mutex::new(results.iter().copied().collect()),
            delay,
            received: watch::Sender::new(0),
            connections: watch::Sender::new((0, 0)),
        })
    }

    /// Connections opened to this agent so far.
    pub(crate) fn opened(&self) -> usize {
        self.connections.borrow().0
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.connections.borrow().1
    }

    /// Waits until `count` commands have been received.
    pub(crate) async fn until_received(&self, count: usize) {
        let mut received = self.received.subscribe();
        let _ = received.wait_for(|received| *received >= count).await;
    }

    /// Waits until a connection was opened and none is open any more.
    pub(crate) async fn until_closed(&self) {
        let mut connections = self.connections.subscribe();
        let _ = connections
            .wait_for(|&(opened, open)| opened > 0 && open == 0)
            .await;
    }

    async fn serve(self: Arc<Self>, stream: tokio::io::DuplexStream) {
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read).split(b'\n');
        while let Ok(Some(line)) = lines.next_segment().await {
            let Some(request) = request_of(&line) else {
                continue;
            };
            let reply = if request["execute"] == "guest-sync-delimited" {
                sync_reply(&request)
            } else {
                self.received.send_modify(|received| *received += 1);
                tokio::time::sleep(self.delay).await;
                let pass = self.results.lock().unwrap().pop_front().unwrap_or(true);
                let reply = if pass {
                    json!({"return": {}, "id": request["id"]})
                } else {
                    json!({"error": {"class": "GenericError", "desc": "scripted"}, "id": request["id"]})
                };
                format!("{reply}\n").into_bytes()
            };
            let _ = write.write_all(&reply).await;
        }
        self.connections.send_modify(|(_, open)| *open -= 1);
    }
}

impl Connect for Arc<ScriptedAgent> {
    fn connect(&self) -> ConnectFuture {
        let agent = Arc::clone(self);
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(4096);
            agent
                .connections
                .send_modify(|(opened, open)| (*opened, *open) = (*opened + 1, *open + 1));
            tokio::spawn(agent.serve(server));
            Ok(Box::new(client) as BoxStream)
        })
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}
