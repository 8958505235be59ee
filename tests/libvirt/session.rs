//! A libvirt session daemon of the test's own, run as an unprivileged user, and the
//! tests/vm guest defined and started in it as a TCG domain.
//!
//! The gateway's libvirt backend is one more client of the daemon that owns the VM's
//! stock agent channel, and it must run as the daemon's user: root would pass the
//! daemon's 0700 socket directory (the session daemon does not check who connects; root's
//! `virsh` is served) and hide that rule. So [`LibvirtSession`] runs `libvirtd` as the
//! user `vpg-libvirt` (created on first use, a system user with no home and no login
//! shell), its XDG directories and `HOME` in a short directory under `/tmp` that the
//! user owns, and everything the test runs against it ([`LibvirtSession::command`],
//! [`LibvirtSession::virsh`]) as that user with the same environment.
//!
//! - The directory is `/tmp/vpgl-XXXX`: a unix socket path holds at most 107 bytes and
//!   libvirt binds the agent channel at
//!   `XDG_CONFIG_HOME/libvirt/qemu/channel/target/domain-N-NAME/org.qemu.guest_agent.0`
//!   (NAME cut to 20 characters), about 100 bytes from there.
//! - The daemon writes its log (stderr) to `libvirtd.log` in the directory; its start-up
//!   errors there are harmless (no dnsmasq, no D-Bus, no access to `/dev/kvm`), and so is
//!   the `End of file while reading data` of the harness's connect that awaits the socket.
//!   That log, each domain's QEMU log and serial console are printed when a test fails.
//! - `qemu.conf` sets `stdio_handler = "file"`, so QEMU writes its own log and libvirt
//!   starts no `virtlogd` (one process less to end).
//! - Dropping the session ends every process it started, by pid: the daemon (its child),
//!   then QEMU, which libvirt daemonizes, so that killing the daemon leaves it running
//!   (its pid comes from libvirt's pid file `XDG_RUNTIME_DIR/libvirt/qemu/run/NAME.pid`),
//!   and a `virtlogd` if one ran; then it removes the directory.
//! - A killed daemon restarted with the same environment reattaches the running domains
//!   (same QEMU, agent answering again): [`LibvirtSession::kill_daemon`],
//!   [`LibvirtSession::restart_daemon`].
//!
//! # What libvirt answers to an agent command (`virDomainQemuAgentCommand`)
//!
//! Seen with Debian's libvirt 9.0.0 (9.0.0-4+deb12u2) through the `virt` crate 0.5
//! (`Error::code()`, `Error::domain()`, `Error::message()`) on one kept connection, and
//! through `virsh` (the message after `error: `). The backend's error classification is
//! built from this table.
//!
//! | case | code | domain | message | after |
//! |---|---|---|---|---|
//! | paused (`virsh suspend`: `paused (user)`) | `VIR_ERR_OPERATION_INVALID` (55) | `VIR_FROM_QEMU` (10) | `Requested operation is not valid: domain is not running` | at once |
//! | shut off (`virsh destroy`: `shut off (destroyed)`) | `VIR_ERR_OPERATION_INVALID` (55) | `VIR_FROM_DOMAIN` (20) | the same | at once |
//! | undefined after destroy, on a handle looked up before | `VIR_ERR_NO_DOMAIN` (42) | `VIR_FROM_QEMU` (10) | `Domain not found: no domain with matching uuid 'UUID' (NAME)` | at once |
//! | looking that domain up by name (`virsh`: `failed to get domain 'NAME'`) | `VIR_ERR_NO_DOMAIN` (42) | `VIR_FROM_QEMU` (10) | `Domain not found: no domain with matching name 'NAME'` | at once |
//! | running, the guest's agent not up yet (booting) | `VIR_ERR_AGENT_UNRESPONSIVE` (86) | `VIR_FROM_QEMU` (10) | `Guest agent is not responding: QEMU guest agent is not connected` | at once |
//! | agent SIGSTOPped: the first command | `VIR_ERR_AGENT_UNRESPONSIVE` (86) | `VIR_FROM_QEMU` (10) | `Guest agent is not responding: Guest agent not available for now` | its own timeout: 1 → 1.0 s, 10 → 10.0 s |
//! | agent still stopped: every later command | the same | the same | the same | 5.0 s whatever its timeout (1, 2, 5, 10, -1, -2 alike) |
//! | the first command after SIGCONT | success | | | at once (7-24 ms on a kept connection), its own reply |
//! | unknown command `{"execute":"nope"}` | `VIR_ERR_INTERNAL_ERROR` (1) | `VIR_FROM_QEMU` (10) | `internal error: unable to execute QEMU agent command 'nope': The command nope has not been found` | at once |
//! | `guest-exec` of a path that does not exist | `VIR_ERR_INTERNAL_ERROR` (1) | `VIR_FROM_QEMU` (10) | `internal error: unable to execute QEMU agent command 'guest-exec': Guest agent command failed, error was 'Failed to execute child process “/does/not/exist” (No such file or directory)'` | at once |
//! | a command that is not JSON | `VIR_ERR_INTERNAL_ERROR` (1) | `VIR_FROM_NONE` (0) | `internal error: cannot parse json ...: lexical error: ...` | at once |
//! | daemon SIGKILLed while idle: the next call on the old connection | `VIR_ERR_SYSTEM_ERROR` (38) | `VIR_FROM_RPC` (7) | `Cannot write data: Broken pipe` | at once |
//! | every call on that connection after it | `VIR_ERR_INTERNAL_ERROR` (1) | `VIR_FROM_RPC` (7) | `internal error: client socket is closed` | at once |
//! | daemon SIGKILLed during a call (waiting on a stopped agent) | `VIR_ERR_SYSTEM_ERROR` (38) | `VIR_FROM_RPC` (7) | `End of file while reading data: Input/output error` | when the daemon dies |
//! | connecting while the daemon is down (its socket file stays) | `VIR_ERR_SYSTEM_ERROR` (38) | `VIR_FROM_RPC` (7) | `Failed to connect socket to 'PATH': Connection refused` | at once |
//! | connecting where no socket is | `VIR_ERR_SYSTEM_ERROR` (38) | `VIR_FROM_RPC` (7) | `Failed to connect socket to 'PATH': No such file or directory` | at once |
//! | connecting as another unprivileged user | `VIR_ERR_SYSTEM_ERROR` (38) | `VIR_FROM_RPC` (7) | `Failed to connect socket to 'PATH': Permission denied` | at once |
//!
//! Why the stopped agent's timings: libvirt sends its `guest-sync` once and then only
//! after a command timed out. The first command after the agent stops goes out at once
//! and times out after the caller's timeout; each command after that first waits for a
//! `guest-sync` with libvirt's own 5 s (the domain's agent timeout, never changed here),
//! whatever timeout the caller gave (1 s and -2, "block", alike). The message is the same
//! in both.
//!
//! And two things the `virt` crate 0.5 does: `Connect::is_alive()` stays true after the
//! daemon died until a call fails (no event loop runs, so nothing reads the closed
//! socket), then false; `Domain::state()` drops `virDomainGetState`'s error and returns
//! state and reason `-1` (`Unknown(4294967295)`, `Unknown(-1)`) for an undefined domain or
//! a dead connection, where `Domain::info()` returns the error.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, chown};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::unistd::{User, geteuid};

use crate::host;
use crate::image::{KERNEL_CMDLINE, MEMORY_MIB, images};
use crate::qga_client::QgaClient;

/// The user the daemon, `virsh` and the gateway run as.
const USER: &str = "vpg-libvirt";

/// The programs the session needs, with the Debian package that brings each.
const PROGRAMS: [(&str, &str); 3] = [
    ("libvirtd", "libvirt-daemon libvirt-daemon-driver-qemu"),
    ("virsh", "libvirt-clients"),
    ("qemu-system-x86_64", "qemu-system-x86"),
];

/// How long a guest may take from `virsh define` to both agents answering: about 5 s on
/// an idle host, far more under load.
const BOOT_LIMIT: Duration = Duration::from_secs(60);

/// How long the daemon may take to listen, at start and after a restart.
const DAEMON_LIMIT: Duration = Duration::from_secs(30);

/// True if libvirt, QEMU and root (to create the user and switch to it) are here.
/// Without them the test skips, saying so, except in CI, where it fails (the same policy
/// as the VM tests): scripts/test.sh installs them.
pub fn libvirt_or_skip(test: &str) -> bool {
    let mut missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(program, _)| !host::runs(program))
        .map(|(program, package)| {
            format!(
                "{program} is not installed (apt-get install --no-install-recommends {package})"
            )
        })
        .collect();
    if !geteuid().is_root() {
        missing.push(format!(
            "root: the libvirt tests create the user {USER} and run libvirtd as it"
        ));
    }
    host::present_or_skip(test, &missing)
}

/// A session with domain `domain` started in it, or None where the test skips (see
/// [`libvirt_or_skip`]).
pub async fn session_with_domain(test: &str, domain: &str) -> Option<(LibvirtSession, Domain)> {
    if !libvirt_or_skip(test) {
        return None;
    }
    let mut libvirt = LibvirtSession::start();
    let domain = libvirt.start_domain(domain).await;
    Some((libvirt, domain))
}

/// The unprivileged user with a passwd entry that the session runs as.
#[derive(Debug)]
pub struct HarnessUser {
    pub uid: u32,
    pub gid: u32,
}

impl HarnessUser {
    /// `vpg-libvirt`, created the first time (`useradd --system`: no home, no login).
    fn get_or_create() -> &'static HarnessUser {
        static USER_ENTRY: OnceLock<HarnessUser> = OnceLock::new();
        USER_ENTRY.get_or_init(|| {
            if User::from_name(USER).expect("getpwnam").is_none() {
                let status = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                    ])
                    .arg(USER)
                    .status()
                    .expect("run useradd");
                // 9: created meanwhile by another test process.
                assert!(
                    status.success() || status.code() == Some(9),
                    "useradd {USER}: {status}"
                );
            }
            let user = User::from_name(USER)
                .expect("getpwnam")
                .unwrap_or_else(|| panic!("no passwd entry for {USER} after useradd"));
            assert!(!user.uid.is_root(), "{USER} must not be root");
            HarnessUser {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }
        })
    }
}

/// Where the tests/vm guest's files are for one domain ([`LibvirtSession::guest_files`]).
pub struct GuestFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The serial console's log (a file).
    pub console: PathBuf,
    /// The control channel's socket, which QEMU binds.
    pub control: PathBuf,
}

/// A domain started by [`LibvirtSession::start_domain`], both its agents answering.
pub struct Domain {
    pub name: String,
    /// QEMU's pid when the domain started.
    pub qemu_pid: i32,
    /// The guest's control agent (`org.probe-gateway.test.control`), to act inside the
    /// guest without going through libvirt.
    pub control: QgaClient,
    /// From `virsh define` to both agents answering.
    pub ready_after: Duration,
}

pub struct LibvirtSession {
    dir: tempfile::TempDir,
    user: &'static HarnessUser,
    daemon: Option<Child>,
    /// The domains started, for their logs when a test fails.
    domains: Vec<String>,
    /// QEMU pids seen, ended at drop with any pid file libvirt still has.
    qemu_pids: Vec<i32>,
}

impl LibvirtSession {
    /// Creates the user (if absent) and the directory, starts the daemon and returns once
    /// it listens.
    pub fn start() -> LibvirtSession {
        let user = HarnessUser::get_or_create();
        let dir = tempfile::Builder::new()
            .prefix("vpgl-")
            .rand_bytes(4)
            .tempdir_in("/tmp")
            .expect("create the session directory");
        let mut session = LibvirtSession {
            dir,
            user,
            daemon: None,
            domains: Vec::new(),
            qemu_pids: Vec::new(),
        };
        session.give_to_user(session.dir.path());
        for sub in ["run", "config", "config/libvirt", "cache", "home"] {
            let path = session.path(sub);
            std::fs::create_dir(&path).expect("create a session directory");
            session.give_to_user(&path);
        }
        let qemu_conf = session.path("config/libvirt/qemu.conf");
        std::fs::write(&qemu_conf, "stdio_handler = \"file\"\n").expect("write qemu.conf");
        session.give_to_user(&qemu_conf);
        session.spawn_daemon();
        session
    }

    pub fn user(&self) -> &HarnessUser {
        self.user
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's socket: `XDG_RUNTIME_DIR/libvirt/libvirt-sock`.
    pub fn socket(&self) -> PathBuf {
        self.path("run/libvirt/libvirt-sock")
    }

    /// The connection URI for this daemon (and nothing else: with `socket=`, libvirt
    /// never starts a daemon of its own).
    pub fn uri(&self) -> String {
        format!("qemu+unix:///session?socket={}", self.socket().display())
    }

    /// The daemon's pid; panics if it is not running (killed and not restarted).
    pub fn daemon_pid(&self) -> i32 {
        let daemon = self.daemon.as_ref().expect("the daemon is not running");
        i32::try_from(daemon.id()).expect("pid")
    }

    /// `program` as the session's user, with its environment (`HOME`, the XDG
    /// directories, a system `PATH`, `LC_ALL=C` so messages read as in the table above)
    /// and the session directory as working directory. Root's environment is not passed on.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        // std drops root's supplementary groups when it sets a uid: the process has the
        // user's uid and primary gid only.
        command
            .uid(self.user.uid)
            .gid(self.user.gid)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("LC_ALL", "C")
            .current_dir(self.dir());
        command
    }

    /// `virsh -c URI ARGS...` as the user.
    pub fn virsh(&self, args: &[&str]) -> Output {
        self.command("virsh")
            .arg("-c")
            .arg(self.uri())
            .args(args)
            .output()
            .expect("run virsh")
    }

    /// Like [`LibvirtSession::virsh`], panicking with virsh's stderr if it fails; its stdout.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let output = self.virsh(args);
        assert!(
            output.status.success(),
            "virsh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `virsh domstate --reason`, e.g. `running (booted)`, `paused (user)`.
    pub fn domstate(&self, domain: &str) -> String {
        self.virsh_ok(&["domstate", "--reason", domain])
            .trim()
            .to_string()
    }

    /// `virsh qemu-agent-command [--timeout SECONDS] DOMAIN COMMAND`: the reply, or
    /// virsh's error message (the last `error: ` line, without that prefix).
    pub fn agent_command(
        &self,
        domain: &str,
        command: &str,
        timeout: Option<u32>,
    ) -> Result<String, String> {
        let timeout = timeout.map(|seconds| seconds.to_string());
        let mut args = vec!["qemu-agent-command"];
        if let Some(seconds) = &timeout {
            args.extend(["--timeout", seconds]);
        }
        args.extend([domain, command]);
        let output = self.virsh(&args);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.trim().lines().last().unwrap_or_default();
            Err(last.strip_prefix("error: ").unwrap_or(last).to_string())
        }
    }

    /// Defines and starts the tests/vm guest as domain `name` (TCG, direct kernel boot,
    /// libvirt's own `org.qemu.guest_agent.0` channel and a control channel the test
    /// binds), and returns once guest-ping answers through libvirt and the control agent
    /// answers.
    pub async fn start_domain(&mut self, name: &str) -> Domain {
        let files = self.guest_files(name);
        let xml = self.domain_xml(name, &files);
        self.start_domain_xml(name, &xml, &files.control).await
    }

    /// The files of the tests/vm guest for domain `name`, where the session's user reaches
    /// them: kernel, initramfs, the serial console's log, the control channel's socket.
    pub fn guest_files(&self, name: &str) -> GuestFiles {
        let (kernel, initrd) = images();
        let control = self.path(&format!("{name}.ctl"));
        assert!(
            control.as_os_str().len() <= 107,
            "unix socket path too long: {}",
            control.display()
        );
        GuestFiles {
            kernel: self.reachable_copy(kernel),
            initrd: self.reachable_copy(initrd),
            console: self.path(&format!("{name}.console")),
            control,
        }
    }

    /// Defines and starts domain `name` from `xml`, whose guest is the tests/vm guest with
    /// its control channel bound at `control`, and returns once guest-ping answers
    /// through libvirt and the control agent answers.
    pub async fn start_domain_xml(&mut self, name: &str, xml: &str, control: &Path) -> Domain {
        let control = control.to_path_buf();
        let path = self.path(&format!("{name}.xml"));
        std::fs::write(&path, xml).expect("write the domain XML");
        self.give_to_user(&path);
        let xml = path;

        let started = Instant::now();
        self.virsh_ok(&["define", &xml.display().to_string()]);
        self.domains.push(name.to_string());
        let defined = started.elapsed();
        self.virsh_ok(&["start", name]);
        let running = started.elapsed();
        let qemu_pid = self.qemu_pid(name);
        self.qemu_pids.push(qemu_pid);

        let deadline = started + BOOT_LIMIT;
        loop {
            match self.agent_command(name, r#"{"execute":"guest-ping"}"#, Some(1)) {
                Ok(reply) if reply == r#"{"return":{}}"# => break,
                other => assert!(
                    Instant::now() < deadline,
                    "guest-ping through libvirt did not answer within {BOOT_LIMIT:?}: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let limit = deadline.saturating_duration_since(Instant::now());
        let control = QgaClient::try_connect(&control, limit)
            .await
            .unwrap_or_else(|| panic!("the control agent did not answer within {BOOT_LIMIT:?}"));
        let ready_after = started.elapsed();
        eprintln!(
            "domain {name}: defined after {:.2} s, started after {:.2} s, both agents answering after {:.2} s",
            defined.as_secs_f64(),
            running.as_secs_f64(),
            ready_after.as_secs_f64()
        );
        Domain {
            name: name.to_string(),
            qemu_pid,
            control,
            ready_after,
        }
    }

    /// QEMU's pid for `domain`, from libvirt's pid file.
    pub fn qemu_pid(&self, domain: &str) -> i32 {
        let file = self.qemu_pid_file(domain);
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        text.trim().parse().expect("a pid in QEMU's pid file")
    }

    /// Kills the daemon by its pid (SIGKILL) and reaps it. QEMU keeps running.
    pub fn kill_daemon(&mut self) {
        let mut daemon = self.daemon.take().expect("the daemon is not running");
        daemon.kill().expect("kill libvirtd");
        daemon.wait().expect("reap libvirtd");
    }

    /// Starts the daemon again with the same environment and returns once it listens.
    pub fn restart_daemon(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is still running");
        self.spawn_daemon();
    }

    /// The daemon's log, and each domain's QEMU log and serial console.
    pub fn logs(&self) -> String {
        let mut logs = format!("--- libvirtd.log\n{}", self.read("libvirtd.log"));
        for name in &self.domains {
            let qemu_log = format!("cache/libvirt/qemu/log/{name}.log");
            logs += &format!("--- {qemu_log}\n{}", self.read(&qemu_log));
            let console = format!("{name}.console");
            logs += &format!("--- {console}\n{}", self.read(&console));
        }
        logs
    }

    fn spawn_daemon(&mut self) {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(self.path("libvirtd.log"))
            .expect("open libvirtd.log");
        writeln!(log, "--- libvirtd started by the test harness").expect("write libvirtd.log");
        let mut daemon = self
            .command("libvirtd")
            .args(["--timeout", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("libvirtd.log"))
            .stderr(log)
            .spawn()
            .expect("start libvirtd");
        // After a SIGKILL the old socket file stays: connecting is refused until the new
        // daemon has bound its own.
        let deadline = Instant::now() + DAEMON_LIMIT;
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = daemon.try_wait().expect("libvirtd status") {
                panic!("libvirtd exited ({status}):\n{}", self.logs());
            }
            if Instant::now() >= deadline {
                let _ = daemon.kill();
                let _ = daemon.wait();
                panic!(
                    "libvirtd did not listen on {} within {DAEMON_LIMIT:?}:\n{}",
                    self.socket().display(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.daemon = Some(daemon);
    }

    fn domain_xml(&self, name: &str, files: &GuestFiles) -> String {
        let GuestFiles {
            kernel,
            initrd,
            console,
            control,
        } = files;
        format!(
            "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{KERNEL_CMDLINE}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='unix'>
      <source mode='bind' path='{control}'/>
      <target type='virtio' name='org.probe-gateway.test.control'/>
    </channel>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
            kernel = kernel.display(),
            initrd = initrd.display(),
            console = console.display(),
            control = control.display(),
        )
    }

    /// `file` where the user can read and run it: a hard link in the session directory
    /// (a copy across filesystems). Root's files may lie behind a directory the user
    /// cannot enter (`/root` is 0700): the guest images in root's cache, or the gateway
    /// binary in a checkout under `/root`.
    pub fn reachable_copy(&self, file: &Path) -> PathBuf {
        let name = file.file_name().expect("a file name");
        let to = self.dir().join(name);
        if !to.exists() && std::fs::hard_link(file, &to).is_err() {
            std::fs::copy(file, &to)
                .unwrap_or_else(|e| panic!("copy {} into the session: {e}", file.display()));
        }
        to
    }

    fn qemu_pid_file(&self, domain: &str) -> PathBuf {
        self.path(&format!("run/libvirt/qemu/run/{domain}.pid"))
    }

    /// Every process besides the daemon that the session may have left: the QEMUs seen
    /// and those in libvirt's pid files, and `virtlogd`, if it ran; only those that still
    /// run as the user (a pid from a stale file may have been reused).
    fn processes_left(&self) -> Vec<i32> {
        let mut pids = self.qemu_pids.clone();
        let mut pid_files = vec![self.path("run/libvirt/virtlogd.pid")];
        if let Ok(entries) = std::fs::read_dir(self.path("run/libvirt/qemu/run")) {
            pid_files.extend(
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|e| e == "pid")),
            );
        }
        for file in pid_files {
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|&pid| {
            host::alive(pid)
                && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == self.user.uid)
        });
        pids
    }

    /// Gives `path` to the session's user.
    pub fn give_to_user(&self, path: &Path) {
        chown(path, Some(self.user.uid), Some(self.user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_else(|e| format!("({e})\n"))
    }
}

impl Drop for LibvirtSession {
    /// Ends the daemon, then every QEMU (and virtlogd) by pid; prints the logs if the
    /// test failed; the directory goes with `dir`.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("libvirt session {}:\n{}", self.dir().display(), self.logs());
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let survivors: Vec<i32> = self
            .processes_left()
            .into_iter()
            .filter(|&pid| !host::end_process(pid))
            .collect();
        if !survivors.is_empty() && !std::thread::panicking() {
            panic!("processes of the libvirt session outlived SIGKILL: {survivors:?}");
        }
    }
}
