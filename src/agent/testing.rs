//! Test peers for the agent code: an in-memory agent the test drives by hand
//! ([`peer_connector`]: each connect is a `tokio::io::duplex` pair whose far end the test
//! gets as a [`Peer`]). With tokio's paused clock, deadlines pass in no wall time.

use std::io;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::transport::{BoxStream, Connect, ConnectFuture};

/// Room in each direction of an in-memory connection.
const DUPLEX_BYTES: usize = 64 * 1024;

/// Connects to in-memory peers, or refuses while told to.
pub(super) struct PeerConnector {
    streams: mpsc::UnboundedSender<DuplexStream>,
    refusing: Arc<Mutex<bool>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

/// The test's side: the far ends of the connections made, and the connector's controls.
pub(super) struct Peers {
    streams: mpsc::UnboundedReceiver<DuplexStream>,
    refusing: Arc<Mutex<bool>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
}

pub(super) fn peer_connector() -> (PeerConnector, Peers) {
    let (streams, incoming) = mpsc::unbounded_channel();
    let refusing = Arc::new(Mutex::new(false));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    (
        PeerConnector {
            streams,
            refusing: Arc::clone(&refusing),
            attempts: Arc::clone(&attempts),
        },
        Peers {
            streams: incoming,
            refusing,
            attempts,
        },
    )
}

impl Connect for PeerConnector {
    fn connect(&self) -> ConnectFuture {
        self.attempts.lock().unwrap().push(Instant::now());
        let refused = *self.refusing.lock().unwrap();
        let streams = self.streams.clone();
        Box::pin(async move {
            if refused {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
            }
            let (client, server) = tokio::io::duplex(DUPLEX_BYTES);
            let _ = streams.send(server);
            Ok(Box::new(client) as BoxStream)
        })
    }

    fn describe(&self) -> String {
        "the test's peer".into()
    }
}

impl Peers {
    /// The next connection the link makes.
    pub(super) async fn accept(&mut self) -> Peer {
        let stream = self.streams.recv().await.expect("the connector is gone");
        let (read, writer) = tokio::io::split(stream);
        Peer {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// The next connection, with its first resync answered: the link is in step.
    pub(super) async fn accept_in_step(&mut self) -> Peer {
        let mut peer = self.accept().await;
        peer.answer_sync().await;
        peer
    }

    pub(super) fn refuse(&self, refuse: bool) {
        *self.refusing.lock().unwrap() = refuse;
    }

    /// When each connect was attempted.
    pub(super) fn attempts(&self) -> Vec<Instant> {
        self.attempts.lock().unwrap().clone()
    }
}

/// The agent's end of one connection.
pub(super) struct Peer {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
}

impl Peer {
    /// The next request line as JSON (a leading `0xFF` dropped); `None` once the link has
    /// shut down its writing side.
    pub(super) async fn next_request(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        let read = self.reader.read_until(b'\n', &mut line).await.ok()?;
        if read == 0 {
            return None;
        }
        Some(request_of(&line).expect("the link sent JSON"))
    }

    /// The next request, which must be `execute`.
    pub(super) async fn expect(&mut self, execute: &str) -> Value {
        let request = self.next_request().await.expect("a request");
        assert_eq!(request["execute"], execute, "{request}");
        request
    }

    /// Reads the next request, a resync, and answers it as qemu-ga does.
    pub(super) async fn answer_sync(&mut self) {
        let sync = self.expect("guest-sync-delimited").await;
        self.answer_sync_request(&sync).await;
    }

    /// Answers the resync `sync` as qemu-ga does: `0xFF`, then its id as the return.
    pub(super) async fn answer_sync_request(&mut self, sync: &Value) {
        self.write(&sync_reply(sync)).await;
    }

    /// Answers `request` with `{"return": value}`.
    pub(super) async fn reply(&mut self, request: &Value, value: Value) {
        let line = json!({"return": value, "id": request["id"]}).to_string();
        self.write(format!("{line}\n").as_bytes()).await;
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("the link reads");
    }
}

/// A request line as the agent reads it: JSON after any `0xFF` bytes (which reset its
/// parser); `None` for a line that is not JSON.
pub(crate) fn request_of(line: &[u8]) -> Option<Value> {
    let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
    serde_json::from_slice(&line[start..]).ok()
}

/// qemu-ga's answer to the resync `sync`: `0xFF`, then its id as the return, one line.
pub(crate) fn sync_reply(sync: &Value) -> Vec<u8> {
    let mut reply = vec![0xFF];
    reply.extend(
        json!({"return": sync["arguments"]["id"]})
            .to_string()
            .bytes(),
    );
    reply.push(b'\n');
    reply
}
