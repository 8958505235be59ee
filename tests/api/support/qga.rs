//! A real qemu-guest-agent, started per test in its own temp dir:
//! `qemu-ga -m unix-listen -p DIR/qga.sock -t DIR -f DIR/qga.pid`. It runs commands on
//! this machine, which then plays the guest.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Finds the qemu-ga binary. Missing is a loud failure, never a skip: scripts/test.sh
/// installs Debian's qemu-guest-agent.
pub fn qemu_ga_binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/qemu-ga",
        "/usr/bin/qemu-ga",
        "/usr/local/bin/qemu-ga",
    ] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "qemu-ga not found: these tests need a real guest agent. Run scripts/test.sh, which installs Debian's qemu-guest-agent."
    );
}

pub struct QemuGa {
    dir: tempfile::TempDir,
    socket: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl QemuGa {
    /// Starts an agent in a new temp dir.
    pub fn start() -> QemuGa {
        QemuGa::start_with(&[])
    }

    /// Starts an agent with extra arguments (e.g. `-b guest-exec`).
    pub fn start_with(args: &[&str]) -> QemuGa {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let mut agent = QemuGa {
            dir,
            socket,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        agent.launch();
        agent
    }

    /// An agent not started yet: its socket path is known, nothing listens there.
    pub fn not_started() -> QemuGa {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        QemuGa {
            dir,
            socket,
            args: Vec::new(),
            child: None,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// Sends `signal` to the agent (SIGSTOP hangs it, SIGCONT resumes it).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal qemu-ga");
    }

    /// Starts (or restarts) the agent process and waits for its socket.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let _ = std::fs::remove_file(&self.socket);
        let dir = self.dir.path();
        let child = Command::new(qemu_ga_binary())
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(&self.socket)
            .arg("-t")
            .arg(dir)
            .arg("-f")
            .arg(dir.join("qga.pid"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-ga");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            assert!(
                self.is_running(),
                "qemu-ga exited before creating its socket"
            );
            assert!(
                Instant::now() < deadline,
                "qemu-ga did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the agent process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the agent (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the agent for `guest-ping` as a separate client (the gateway must not hold it):
    /// resync, ping, close gracefully. True if it answered.
    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let id = 987_654_321u64;
        let request = format!(
            "\u{ff}{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n{{\"execute\":\"guest-ping\",\"id\":5}}\n"
        );
        // 0xFF must go out as one raw byte, not as UTF-8.
        let mut bytes = vec![0xFF];
        bytes.extend_from_slice(request.trim_start_matches('\u{ff}').as_bytes());
        if stream.write_all(&bytes).is_err() {
            return false;
        }
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut answered = false;
        let mut line = Vec::new();
        for _ in 0..4 {
            line.clear();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                break;
            }
            if String::from_utf8_lossy(&line).contains("\"id\": 5") {
                answered = true;
                break;
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        answered
    }
}

impl Drop for QemuGa {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // SIGCONT first, in case a test left it stopped.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill();
    }
}
