//! A real qemu-ga in a temp dir, and the minimal client that gives the floor: the round
//! trip of the agent itself, with nothing of the gateway in the way.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// `qemu-ga -m unix-listen` on a socket in its own temp dir; killed on drop.
pub struct QemuGa {
    dir: tempfile::TempDir,
    child: Child,
}

impl QemuGa {
    pub fn start() -> QemuGa {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let child = Command::new(qemu_ga())
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(dir.path())
            .arg("-f")
            .arg(dir.path().join("qga.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-ga (scripts/bench.sh installs it)");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "qemu-ga did not listen"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        QemuGa { dir, child }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("qga.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for QemuGa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn qemu_ga() -> PathBuf {
    ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("qemu-ga"))
}

/// The least a client must do: one connection, one `guest-sync-delimited`, then commands
/// and their replies, one line each.
pub struct RawAgent {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
}

impl RawAgent {
    pub fn connect(socket: &Path) -> RawAgent {
        let stream = UnixStream::connect(socket).expect("connect to qemu-ga");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut agent = RawAgent {
            writer: stream,
            reader,
            line: Vec::with_capacity(512),
        };
        let id = 4242;
        agent.send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}));
        // The reply starts with 0xFF; anything before it is stale.
        loop {
            let reply = agent.reply();
            if reply["return"] == id {
                break;
            }
        }
        agent
    }

    fn send(&mut self, command: &Value) {
        let mut bytes = serde_json::to_vec(command).expect("json");
        bytes.push(b'\n');
        self.writer.write_all(&bytes).expect("write to qemu-ga");
    }

    fn reply(&mut self) -> Value {
        self.line.clear();
        self.reader
            .read_until(b'\n', &mut self.line)
            .expect("read from qemu-ga");
        let text: Vec<u8> = self.line.iter().copied().filter(|&b| b != 0xFF).collect();
        serde_json::from_slice(&text).expect("a JSON reply")
    }

    /// One `guest-ping` round trip.
    pub fn ping(&mut self) {
        self.writer
            .write_all(b"{\"execute\":\"guest-ping\"}\n")
            .expect("write");
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line).expect("read");
        assert!(self.line.starts_with(b"{\"return\""), "guest-ping failed");
    }

    /// `guest-exec` of `path`, then `guest-exec-status` at once and again until it exited:
    /// the fastest a client can learn an exit code.
    pub fn exec(&mut self, path: &str) -> i64 {
        self.send(
            &json!({"execute": "guest-exec", "arguments": {"path": path, "capture-output": true}}),
        );
        let pid = self.reply()["return"]["pid"].as_i64().expect("a pid");
        loop {
            self.send(&json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}));
            let status = self.reply();
            if status["return"]["exited"] == true {
                return status["return"]["exitcode"].as_i64().unwrap_or(-1);
            }
        }
    }

    /// Closes as the agent needs (docs/qemu-guest-agent.md, "Closing the connection"): shut down writing, read to EOF.
    pub fn close(self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
        let mut reader = self.reader;
        let _ = reader
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(1)));
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest).or_else(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(0),
            _ => Err(e),
        });
    }
}
