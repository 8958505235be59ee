//! One open stream to the agent: its two halves, what is known about it, and how it is
//! written to and closed. A listening qemu-ga exits when its client closes with a reply
//! unread, so a connection is always closed by shutting down writing and draining to EOF
//! within a bound (docs/qemu-guest-agent.md, "Closing the connection").

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{Instant, timeout};

use super::sync::{Resync, Sync};
use crate::agent::backoff::Backoff;
use crate::agent::framing::{Frame, FrameReader, FramingError};
use crate::agent::transport::BoxStream;

/// How long a write may block (a hung agent stops reading; its socket buffer fills).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines kept from a drain to look for late replies.
const MAX_DRAINED_LINES: usize = 16;

/// The connection, while there is one.
pub(super) struct Connection {
    pub(super) reader: FrameReader<ReadHalf<BoxStream>>,
    writer: WriteHalf<BoxStream>,
    pub(super) sync: Sync,
    /// An unparsable line arrived while a command was in flight: resync after it.
    pub(super) resync_after_reply: bool,
    /// The reconnect backoff in force when this connection was made; it is reset only
    /// once the agent answers, so a peer that accepts and hangs up at once is not
    /// reconnected to in a hot loop.
    pub(super) reconnect: Backoff,
    /// The agent answered a resync on this connection.
    pub(super) answered: bool,
    /// A command (not only a resync) was answered on this connection.
    pub(super) served: bool,
    pub(super) connected_at: Instant,
    /// An unparsable line was logged at warn on this connection already.
    pub(super) warned: bool,
}

impl Connection {
    /// A new connection over `stream`, out of step until a resync is answered.
    pub(super) fn new(stream: BoxStream, reconnect: Backoff) -> Connection {
        let (reader, writer) = tokio::io::split(stream);
        Connection {
            reader: FrameReader::new(reader),
            writer,
            sync: Sync::Pending(Resync::new()),
            resync_after_reply: false,
            reconnect,
            answered: false,
            served: false,
            connected_at: Instant::now(),
            warned: false,
        }
    }

    /// Writes `bytes` within [`WRITE_TIMEOUT`]; the error says why not.
    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        write_bounded(&mut self.writer, bytes).await
    }

    /// Shuts down writing and reads until the agent closes, within `bound`. Returns the
    /// lines drained (at most [`MAX_DRAINED_LINES`]), which may hold a late reply.
    pub(super) async fn close_gracefully(mut self, bound: Duration) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let drained = timeout(bound, async {
            let _ = self.writer.shutdown().await;
            loop {
                match self.reader.next_frame().await {
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
}

async fn write_bounded<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> Result<(), String> {
    match timeout(WRITE_TIMEOUT, async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("the agent stopped reading for {WRITE_TIMEOUT:?}")),
    }
}
