//! The gateway under test: the release binary as it ships, in its own process, and what
//! `/proc` says of it; or, measured the same way, the bench's ideal relay.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;

pub struct Gateway {
    child: Child,
    pub address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts `binary serve` with `config` against the agent at `agent`, on `core` when
    /// given (through `taskset`), and waits for `/healthz`.
    pub fn start(binary: &Path, config: &str, agent: &Path, core: Option<usize>) -> Gateway {
        let (gateway, _) = Gateway::start_timed(binary, config, agent, core);
        gateway
    }

    /// [`Gateway::start`], and the time from spawning the process to the first `200`.
    pub fn start_timed(
        binary: &Path,
        config: &str,
        agent: &Path,
        core: Option<usize>,
    ) -> (Gateway, Duration) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, config).expect("write config");
        let address = free_address();
        let mut command = pinned(binary, core);
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--agent")
            .arg(agent)
            .arg("--listen")
            .arg(address.to_string())
            .env("RUST_LOG", "info");
        Gateway::spawn(command, address, dir)
    }

    /// The bench's own ideal relay ([`crate::relay`]) against the agent at `agent`, in its
    /// own process like the gateway, so that it is measured the same way.
    pub fn start_relay(agent: &Path, core: Option<usize>) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = free_address();
        let mut command = pinned(&std::env::current_exe().expect("the bench binary"), core);
        command.arg("relay").arg(address.to_string()).arg(agent);
        Gateway::spawn(command, address, dir).0
    }

    /// Spawns `command`, which serves `address`, and waits for its first `200`.
    fn spawn(
        mut command: Command,
        address: SocketAddr,
        dir: tempfile::TempDir,
    ) -> (Gateway, Duration) {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let child = command.spawn().expect("start the server under test");
        let gateway = Gateway {
            child,
            address,
            _dir: dir,
        };
        loop {
            if let Ok(200) = http::get_once(address, "/healthz") {
                return (gateway, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the server under test did not serve /healthz"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn proc(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.child.id()))
    }

    /// CPU time of all the gateway's threads, in ns (schedstat: exact, unlike ticks).
    pub fn cpu_ns(&self) -> u64 {
        cpu_ns(self.child.id())
    }

    pub fn threads(&self) -> usize {
        std::fs::read_dir(self.proc("task")).map_or(0, Iterator::count)
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(self.proc("status"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// The sum of a metric's series whose line starts with `series`.
    pub fn metric(&self, series: &str) -> f64 {
        http::get_text(self.address, "/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // SIGTERM: the gateway closes its agent connection as the agent needs.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// `program`, on `core` when given (through `taskset`).
fn pinned(program: &Path, core: Option<usize>) -> Command {
    match core {
        Some(core) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &core.to_string()]).arg(program);
            taskset
        }
        None => Command::new(program),
    }
}

pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// The sum of the run time of every thread of `pid`, in ns (schedstat).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
