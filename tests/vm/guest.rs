//! The test VM: a minimal Debian guest (tests/vm/build-guest.sh) booted under QEMU with
//! qemu-ga on a virtio-serial port exposed as a chardev unix socket, exactly as libvirt
//! wires `org.qemu.guest_agent.0` for a KubeVirt VM, plus a control port for the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host;
use crate::image::{KERNEL_CMDLINE, MEMORY_MIB, images};
use crate::qga_client::QgaClient;

const QEMU: &str = "qemu-system-x86_64";

/// True if QEMU is here. Without it the VM tests skip, except in CI (`CI=true`), where a
/// missing QEMU is a failure: scripts/test.sh installs it.
pub fn qemu_or_skip(test: &str) -> bool {
    let mut missing = Vec::new();
    if !host::runs(QEMU) {
        missing.push(format!(
            "{QEMU} is not installed (apt-get install --no-install-recommends qemu-system-x86)"
        ));
    }
    host::present_or_skip(test, &missing)
}

pub struct Vm {
    dir: tempfile::TempDir,
    pid: Option<i32>,
    pub started: Instant,
    /// More virtio-serial ports: (host socket QEMU binds, guest-side port name).
    channels: Vec<(PathBuf, String)>,
}

impl Vm {
    /// The socket paths, known before the VM starts (a gateway may be started first).
    pub fn prepare() -> Vm {
        Vm {
            dir: tempfile::tempdir().expect("temp dir"),
            pid: None,
            started: Instant::now(),
            channels: Vec::new(),
        }
    }

    /// Adds a virtio-serial port `name` whose host side is a unix socket QEMU binds at
    /// `socket` (a libvirt `<channel type="unix"><source mode="bind" .../>`).
    pub fn add_channel(&mut self, socket: &Path, name: &str) {
        self.channels.push((socket.to_path_buf(), name.to_string()));
    }

    /// Prepares and boots at once.
    pub fn boot() -> Vm {
        let mut vm = Vm::prepare();
        vm.start();
        vm
    }

    /// The host side of the guest agent's virtio-serial port (what the gateway connects to).
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.path().join("qga0.sock")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn monitor_socket(&self) -> PathBuf {
        self.dir.path().join("monitor.sock")
    }

    /// Runs one human-monitor command (`stop`, `cont`, ...) and returns its output, as an
    /// operator (or libvirt, for a migration's pause) would drive QEMU.
    pub async fn monitor(&self, command: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::UnixStream::connect(self.monitor_socket())
            .await
            .expect("connect to the QEMU monitor");
        let mut seen = Vec::new();
        let mut buffer = [0u8; 1024];
        // The banner ends with the first prompt; the command's output with the next.
        for prompts in [1, 2] {
            if prompts == 2 {
                stream
                    .write_all(format!("{command}\n").as_bytes())
                    .await
                    .expect("monitor write");
            }
            while String::from_utf8_lossy(&seen).matches("(qemu) ").count() < prompts {
                let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
                    .await
                    .expect("the monitor answers")
                    .expect("monitor read");
                assert!(n > 0, "the monitor closed");
                seen.extend_from_slice(&buffer[..n]);
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts QEMU (daemonized; returns once its sockets exist). The guest then boots.
    pub fn start(&mut self) {
        let (kernel, initrd) = images();
        let chardev = |id: &str, path: &Path| {
            format!("socket,path={},server=on,wait=off,id={id}", path.display())
        };
        self.started = Instant::now();
        let status = Command::new(QEMU)
            .args(["-accel", "tcg", "-smp", "1"])
            .arg("-m")
            .arg(MEMORY_MIB.to_string())
            .args(["-nodefaults", "-no-reboot", "-display", "none"])
            .arg("-serial")
            .arg(format!("file:{}", self.path("console.log").display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", KERNEL_CMDLINE])
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(chardev("qga0", &self.agent_socket()))
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .arg("-chardev")
            .arg(chardev("ctl", &self.control_socket()))
            .args([
                "-device",
                "virtserialport,chardev=ctl,name=org.probe-gateway.test.control",
            ])
            .args(
                self.channels
                    .iter()
                    .enumerate()
                    .flat_map(|(i, (socket, name))| {
                        [
                            "-chardev".to_string(),
                            chardev(&format!("channel{i}"), socket),
                            "-device".to_string(),
                            format!("virtserialport,chardev=channel{i},name={name}"),
                        ]
                    }),
            )
            .arg("-monitor")
            .arg(format!(
                "unix:{},server=on,wait=off",
                self.monitor_socket().display()
            ))
            .arg("-pidfile")
            .arg(self.path("qemu.pid"))
            .arg("-daemonize")
            .status()
            .expect("start qemu");
        assert!(status.success(), "qemu failed to start: {status}");
        let pid = std::fs::read_to_string(self.path("qemu.pid")).expect("qemu pid file");
        self.pid = Some(pid.trim().parse().expect("qemu pid"));
    }

    /// The control agent, once the guest has booted far enough to answer.
    pub async fn control(&self) -> QgaClient {
        let limit = Duration::from_secs(90);
        match QgaClient::try_connect(&self.control_socket(), limit).await {
            Some(client) => client,
            None => panic!(
                "the guest's control agent did not answer within {limit:?}; console:\n{}",
                self.console()
            ),
        }
    }

    /// The guest's console output so far, for failure messages.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.path("console.log")).unwrap_or_default()
    }
}

impl Drop for Vm {
    /// Tears QEMU down by pid and waits until it is gone.
    fn drop(&mut self) {
        let Some(pid) = self.pid else {
            return;
        };
        host::end_process(pid);
    }
}
