//! A stand-in for Firecracker's / Cloud Hypervisor's host-side vsock socket: it answers
//! `CONNECT <port>` with `OK <n>` for the one guest port it knows and then relays bytes to
//! a real qemu-ga socket; any other port is refused as those VMMs do.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub struct HybridVsock {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl HybridVsock {
    /// Listens on a new socket; `port` leads to the agent at `agent`.
    pub fn start(port: u32, agent: &Path) -> HybridVsock {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("v.sock");
        let listener = UnixListener::bind(&socket).expect("bind hybrid vsock");
        let agent = agent.to_path_buf();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, port, agent.clone()));
            }
        });
        HybridVsock {
            _dir: dir,
            socket,
            task,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

async fn relay(client: UnixStream, port: u32, agent: PathBuf) {
    let mut client = BufReader::new(client);
    let mut line = String::new();
    if client.read_line(&mut line).await.is_err() {
        return;
    }
    if line.trim_end() != format!("CONNECT {port}") {
        let _ = client
            .get_mut()
            .write_all(b"ERR no listener on that port\n")
            .await;
        return;
    }
    let Ok(mut upstream) = UnixStream::connect(&agent).await else {
        return;
    };
    if client
        .get_mut()
        .write_all(b"OK 1073741824\n")
        .await
        .is_err()
    {
        return;
    }
    // Half-closes are passed on, so the gateway's graceful close reaches the agent.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

impl Drop for HybridVsock {
    fn drop(&mut self) {
        self.task.abort();
    }
}
