//! Opening a byte stream to the agent. Each transport only opens a stream; everything
//! after that (framing, resync, commands) is one code path in [`super::client`].

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::AgentAddress;

/// A connected stream to an agent.
pub(crate) trait AgentStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AgentStream for T {}

/// A boxed [`AgentStream`].
pub(crate) type BoxStream = Box<dyn AgentStream>;

/// The future returned by [`Connect::connect`].
pub(crate) type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send>>;

/// How long opening a stream (and a hybrid-vsock handshake) may take before it counts as
/// failed. The kernel's own vsock connect timeout is 2 s or more; a probe's is often 1 s.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest handshake reply line accepted from a hybrid-vsock socket.
const MAX_HANDSHAKE_LINE: usize = 64;

/// Something that opens streams to an agent: an [`AgentAddress`], or a test's in-memory peer.
pub(crate) trait Connect: Send + Sync + 'static {
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
                AgentAddress::Vsock { cid, port } => {
                    let address = tokio_vsock::VsockAddr::new(cid, port);
                    let stream = tokio_vsock::VsockStream::connect(address).await?;
                    Ok(Box::new(stream) as BoxStream)
                }
                AgentAddress::HybridVsock { path, port } => {
                    let mut stream = tokio::net::UnixStream::connect(&path).await?;
                    hybrid_handshake(&mut stream, port).await?;
                    Ok(Box::new(stream) as BoxStream)
                }
                AgentAddress::PrivateChannel {
                    socket,
                    shared_layout,
                } => {
                    let stream = connect_private_channel(&socket, &shared_layout).await?;
                    Ok(Box::new(stream) as BoxStream)
                }
            }
        })
    }

    fn describe(&self) -> String {
        self.to_string()
    }
}

/// Connects to whichever of the two places of the private channel's socket exists; until
/// QEMU has created it, says that the gateway waits for it.
async fn connect_private_channel(
    socket: &Path,
    shared_layout: &Path,
) -> io::Result<tokio::net::UnixStream> {
    match tokio::net::UnixStream::connect(socket).await {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            match tokio::net::UnixStream::connect(shared_layout).await {
                Err(error) if error.kind() == io::ErrorKind::NotFound => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "the VM's private agent channel is not there yet (QEMU creates it when \
                         the VM starts): no socket at {} or {}",
                        socket.display(),
                        shared_layout.display()
                    ),
                )),
                other => other,
            }
        }
        other => other,
    }
}

/// The Firecracker / Cloud Hypervisor handshake: `CONNECT <port>\n`, answered by
/// `OK <host port>\n`; anything else is a refusal, reported with what the socket said.
/// The reply is read byte by byte so that nothing after its newline is taken from the
/// agent's stream.
pub(crate) async fn hybrid_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    port: u32,
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        if stream.read(&mut byte).await? == 0 {
            return Err(refused(port, &line, "the socket closed"));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_HANDSHAKE_LINE {
            return Err(refused(port, &line, "no end of line"));
        }
    }
    if line.starts_with(b"OK ") {
        Ok(())
    } else {
        Err(refused(port, &line, "unexpected reply"))
    }
}

fn refused(port: u32, line: &[u8], why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!(
            "hybrid vsock handshake for port {port} refused ({why}): {:?}",
            String::from_utf8_lossy(line)
        ),
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn handshake_against(reply: &'static [u8]) -> (io::Result<()>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(256);
        let peer = tokio::spawn(async move {
            let mut request = vec![0u8; 13];
            server.read_exact(&mut request).await.unwrap();
            server.write_all(reply).await.unwrap();
            request
        });
        let result = hybrid_handshake(&mut client, 1234).await;
        (result, peer.await.unwrap())
    }

    #[tokio::test]
    async fn hybrid_handshake_sends_connect_and_accepts_ok() {
        let (result, request) = handshake_against(b"OK 1073741824\n{\"return\": {}}\n").await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(request, b"CONNECT 1234\n");
    }

    #[tokio::test]
    async fn a_refused_hybrid_handshake_says_what_the_socket_answered() {
        let (result, _) = handshake_against(b"ERR no listener\n").await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("refused"), "{error}");
        assert!(error.contains("ERR no listener"), "{error}");
    }
}
