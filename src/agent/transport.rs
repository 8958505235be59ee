//! Opening a byte stream to the agent. Each transport only opens a stream; everything
//! after that (framing, resync, commands) is one code path in [`super::client`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::AgentAddress;

/// A connected stream to an agent.
pub trait AgentStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AgentStream for T {}

/// A boxed [`AgentStream`].
pub type BoxStream = Box<dyn AgentStream>;

/// The future returned by [`Connect::connect`].
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send>>;

/// How long opening a stream may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Something that opens streams to an agent: an [`AgentAddress`], or a test's in-memory peer.
pub trait Connect: Send + Sync + 'static {
    fn connect(&self) -> ConnectFuture;
    /// Where it connects, for log lines and reasons.
    fn describe(&self) -> String;
}

impl Connect for AgentAddress {
    fn connect(&self) -> ConnectFuture {
        let address = self.clone();
        Box::pin(async move {
            match address {
                AgentAddress::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(&path).await?;
                    Ok(Box::new(stream) as BoxStream)
                }
            }
        })
    }

    fn describe(&self) -> String {
        self.to_string()
    }
}
