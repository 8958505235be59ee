//! A minimal qemu-guest-agent client for the tests' own use: the control port (acting
//! inside the guest) and raw round trips on the agent port (the latency floor). Not the
//! gateway's client: deliberately separate, so it can judge the gateway.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::timeout;

pub struct QgaClient {
    stream: BufReader<UnixStream>,
    next_id: u64,
}

impl QgaClient {
    /// Connects and resyncs, retrying until `limit` (the guest may still be booting).
    pub async fn connect(socket: &Path, limit: Duration) -> QgaClient {
        match QgaClient::try_connect(socket, limit).await {
            Some(client) => client,
            None => panic!("no agent answered on {} within {limit:?}", socket.display()),
        }
    }

    /// Like [`QgaClient::connect`], None if no agent answered in time.
    pub async fn try_connect(socket: &Path, limit: Duration) -> Option<QgaClient> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(stream) = UnixStream::connect(socket).await {
                let mut client = QgaClient {
                    stream: BufReader::new(stream),
                    next_id: 1000,
                };
                if client.sync(Duration::from_secs(1)).await {
                    return Some(client);
                }
                // Keep this connection: the sync may still be answered once the agent
                // is up. Retry syncing on it until the deadline.
                while tokio::time::Instant::now() < deadline {
                    if client.sync(Duration::from_secs(1)).await {
                        return Some(client);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `0xFF` + `guest-sync-delimited`; true once the matching reply is read.
    pub async fn sync(&mut self, limit: Duration) -> bool {
        self.next_id += 1;
        let id = self.next_id * 7919;
        let mut request = vec![0xFF];
        request.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        request.push(b'\n');
        if self.stream.get_mut().write_all(&request).await.is_err() {
            return false;
        }
        let wanted = json!({"return": id});
        timeout(limit, async {
            let mut line = Vec::new();
            loop {
                line.clear();
                if self.stream.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return false;
                }
                let text = line.strip_prefix(&[0xFF]).unwrap_or(&line);
                let start = text.iter().position(|&b| b == b'{').unwrap_or(0);
                if serde_json::from_slice::<Value>(&text[start..]).ok() == Some(wanted.clone()) {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Sends `command` and reads its reply (by id), within 10 s.
    pub async fn call(&mut self, execute: &str, arguments: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"execute": execute, "id": id});
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&line)
            .await
            .expect("write to agent");
        timeout(Duration::from_secs(10), async {
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = self
                    .stream
                    .read_until(b'\n', &mut line)
                    .await
                    .expect("read from agent");
                assert!(n > 0, "agent closed the connection");
                let Ok(reply) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if reply["id"] == id {
                    return match reply.get("return") {
                        Some(value) => Ok(value.clone()),
                        None => Err(reply["error"].clone()),
                    };
                }
            }
        })
        .await
        .expect("agent reply within 10 s")
    }

    /// Runs a command in the guest to completion: (exit code, stdout).
    pub async fn run(&mut self, path: &str, args: &[&str]) -> (i64, String) {
        let started = self
            .call(
                "guest-exec",
                json!({"path": path, "arg": args, "capture-output": true}),
            )
            .await
            .unwrap_or_else(|e| panic!("guest-exec {path}: {e}"));
        let pid = started["pid"].as_i64().expect("pid");
        loop {
            let status = self
                .call("guest-exec-status", json!({"pid": pid}))
                .await
                .expect("guest-exec-status");
            if status["exited"] == true {
                let out = status["out-data"].as_str().unwrap_or_default();
                let out = base64::engine::general_purpose::STANDARD
                    .decode(out)
                    .unwrap_or_default();
                return (
                    status["exitcode"].as_i64().unwrap_or(-1),
                    String::from_utf8_lossy(&out).into_owned(),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs a shell command line in the guest: (exit code, stdout).
    pub async fn sh(&mut self, script: &str) -> (i64, String) {
        self.run("sh", &["-c", script]).await
    }

    /// The raw stream, to write what a misbehaving client would.
    pub fn raw(&mut self) -> &mut UnixStream {
        self.stream.get_mut()
    }

    /// Closes gracefully: shut down writing, read what is left (bounded).
    pub async fn close(mut self) {
        let _ = self.stream.get_mut().shutdown().await;
        let mut rest = Vec::new();
        let _ = timeout(Duration::from_secs(2), self.stream.read_to_end(&mut rest)).await;
    }
}
