//! A scripted agent on a unix socket, for faults a real qemu-ga cannot be made to show
//! (late replies on demand, garbage, silence). Like the real one it serves one client,
//! reads requests in order and answers each before reading the next; `0xFF` gets the
//! real agent's stray-byte error and `guest-sync-delimited` its delimited reply, unless
//! the script says otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// `{"return": value, "id": id}` as a line.
pub fn reply(request: &Value, value: Value) -> Vec<u8> {
    let mut line = serde_json::json!({"return": value, "id": request["id"]}).to_string();
    line.push('\n');
    line.into_bytes()
}

/// The script: given a request (not a sync), the byte strings to write in answer.
pub type Script = dyn Fn(&Value) -> Vec<Vec<u8>> + Send + Sync;

pub struct FakeAgent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    /// Listens on a new socket and serves clients one at a time with `script`.
    /// `on_connect` bytes are written to every new client before anything is read.
    pub fn start(on_connect: Vec<u8>, script: Arc<Script>) -> FakeAgent {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&socket).expect("bind fake agent");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &on_connect, &script).await;
            }
        });
        FakeAgent {
            _dir: dir,
            socket,
            task,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: tokio::net::UnixStream, on_connect: &[u8], script: &Arc<Script>) {
    let (read, mut write) = stream.into_split();
    if write.write_all(on_connect).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut text = &line[..];
        while let Some(at) = text.iter().position(|&b| b == 0xFF) {
            text = &text[at + 1..];
            let stray = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\ufffd'\"}}\n";
            if write.write_all(stray).await.is_err() {
                return;
            }
        }
        let Ok(request) = serde_json::from_slice::<Value>(text) else {
            continue;
        };
        let actions = if request["execute"] == "guest-sync-delimited" {
            let mut bytes = vec![0xFF];
            bytes.extend_from_slice(
                format!("{{\"return\": {}}}\n", request["arguments"]["id"]).as_bytes(),
            );
            vec![bytes]
        } else {
            script(&request)
        };
        for bytes in actions {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

/// A socket that accepts connections and never writes a byte: a hung or absent agent
/// behind a chardev that accepts anyway.
pub struct SilentPeer {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl SilentPeer {
    pub fn start() -> SilentPeer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&socket).expect("bind silent peer");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        SilentPeer {
            _dir: dir,
            socket,
            task,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
