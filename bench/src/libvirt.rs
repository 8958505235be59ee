//! The libvirt path, against a session daemon and domain set up by scripts/bench.sh
//! (scripts/libvirt-session.sh): the floor (virsh's own shell, one connection, a
//! `qemu-agent-command` per line), `/live` through the libvirt gateway on a new connection
//! per probe, and a process per probe (`virsh qemu-agent-command`, and the gateway's
//! `check`). Everything runs as the daemon's user (its socket is 0700). CPU counts every
//! process involved except QEMU: the gateway and libvirtd for HTTP, the spawned process
//! and libvirtd for the others.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway::cpu_ns;
use crate::stats::{Samples, ms, us};
use crate::{children_cpu_ns, http, table, timed};

/// `--libvirt DIR DOMAIN UID GID`: the session scripts/libvirt-session.sh started.
pub struct Session {
    pub dir: PathBuf,
    pub domain: String,
    pub uid: u32,
    pub gid: u32,
}

/// What the libvirt phase measured.
pub struct Results {
    floor: Duration,
    floor_commands: usize,
    floor_daemon_cpu_ns: f64,
    live: Samples,
    gateway_cpu_ns: f64,
    daemon_cpu_http_ns: f64,
    virsh: Samples,
    virsh_cpu_ns: f64,
    check: Samples,
    check_cpu_ns: f64,
    warm_kib: (u64, u64),
    after_kib: (u64, u64),
    leak_probes: usize,
}

impl Session {
    fn uri(&self) -> String {
        format!(
            "qemu+unix:///session?socket={}/run/libvirt/libvirt-sock",
            self.dir.display()
        )
    }

    fn binary(&self) -> PathBuf {
        self.dir.join("virt-probe-gateway-libvirt")
    }

    /// `program` as the session's user, with its environment.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.dir)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn daemon_pid(&self) -> u32 {
        let file = self.dir.join("run/libvirt/libvirtd.pid");
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| panic!("no daemon pid in {}", file.display()))
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

struct LibvirtGateway {
    child: Child,
    address: std::net::SocketAddr,
}

impl Drop for LibvirtGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(session: &Session, config: &Path) -> LibvirtGateway {
    let address = crate::gateway::free_address();
    let child = session
        .command(session.binary())
        .args(["serve", "--config"])
        .arg(config)
        .arg("--listen")
        .arg(address.to_string())
        .spawn()
        .expect("start the libvirt gateway");
    let gateway = LibvirtGateway { child, address };
    let started = Instant::now();
    // Passing (no liveness grace in this config): the guest's agent answered.
    while http::get_once(address, "/live").ok() != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the libvirt gateway did not pass /live (is the guest up?)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gateway
}

/// Runs the libvirt phase: `probes` HTTP probes, `processes` spawned ones, `leak_probes`
/// for the memory figure.
pub fn run(session: &Session, probes: usize, processes: usize, leak_probes: usize) -> Results {
    let config = session.dir.join("bench-gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "agent: \"libvirt:{}\"\nlibvirtUri: \"{}\"\nlivenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {{}}\n  timeoutSeconds: 5\n",
            session.domain,
            session.uri()
        ),
    )
    .expect("write the config");
    std::os::unix::fs::chown(&config, Some(session.uid), Some(session.gid)).expect("chown");
    let gateway = start_gateway(session, &config);
    let daemon = session.daemon_pid();
    let gateway_pid = gateway.child.id();

    // The floor: virsh's shell, one connection, one command per line.
    let floor_commands = probes;
    let script: String = (0..floor_commands)
        .map(|_| {
            format!(
                "qemu-agent-command {} '{{\"execute\":\"guest-ping\"}}'\n",
                session.domain
            )
        })
        .collect();
    let floor_daemon0 = cpu_ns(daemon);
    let started = Instant::now();
    let mut shell = session
        .command("virsh")
        .args(["-q", "-c", &session.uri()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("virsh");
    // Fed from a thread of its own while its output is read: virsh answers each line as it
    // reads it, and a writer that waited for all of the input to go in first would block on
    // a full stdin pipe while virsh blocks on its full stdout pipe (about 4 700 answers in:
    // the full run's 5 000 hung there).
    let mut stdin = shell.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let output = shell.wait_with_output().expect("virsh");
    feeder
        .join()
        .expect("the feeding thread")
        .expect("feed virsh");
    let floor = started.elapsed() / u32::try_from(floor_commands).unwrap_or(u32::MAX);
    // libvirtd's own share of an agent command, whoever the client: what no client of
    // libvirt can go below.
    let floor_daemon_cpu_ns = (cpu_ns(daemon) - floor_daemon0) as f64 / floor_commands as f64;
    let answered = String::from_utf8_lossy(&output.stdout)
        .matches("{\"return\":{}}")
        .count();
    assert_eq!(
        answered, floor_commands,
        "virsh's shell answered {answered} pings"
    );

    // /live through the gateway, a new connection per probe.
    let live_once = || {
        assert_eq!(
            http::get_once(gateway.address, "/live").expect("GET /live"),
            200
        )
    };
    let (gateway0, daemon0) = (cpu_ns(gateway_pid), cpu_ns(daemon));
    let live = timed(probes / 10, probes, live_once);
    let total = (probes + probes / 10) as f64;
    let gateway_cpu_ns = (cpu_ns(gateway_pid) - gateway0) as f64 / total;
    let daemon_cpu_http_ns = (cpu_ns(daemon) - daemon0) as f64 / total;

    // A process per probe: virsh, then the gateway's check.
    let per_process = |command: &mut dyn FnMut() -> Command| {
        let (children0, daemon0) = (children_cpu_ns(), cpu_ns(daemon));
        let samples = timed(0, processes, || {
            let status = command().status().expect("spawn");
            assert!(status.success(), "a process per probe failed");
        });
        let cpu =
            (children_cpu_ns() - children0 + cpu_ns(daemon) - daemon0) as f64 / processes as f64;
        (samples, cpu)
    };
    let (virsh, virsh_cpu_ns) = per_process(&mut || {
        let mut command = session.command("virsh");
        command.args([
            "-q",
            "-c",
            &session.uri(),
            "qemu-agent-command",
            &session.domain,
            "{\"execute\":\"guest-ping\"}",
        ]);
        command
    });
    let (check, check_cpu_ns) = per_process(&mut || {
        let mut command = session.command(session.binary());
        command.args(["check", "liveness", "--config"]).arg(&config);
        command
    });

    // Memory: after a warm-up, and after leak_probes more.
    let kib = || {
        (
            status_kib(gateway_pid, "VmRSS"),
            status_kib(gateway_pid, "RssAnon"),
        )
    };
    let warm_kib = kib();
    for _ in 0..leak_probes {
        live_once();
    }
    let after_kib = kib();
    Results {
        floor,
        floor_commands,
        floor_daemon_cpu_ns,
        live,
        gateway_cpu_ns,
        daemon_cpu_http_ns,
        virsh,
        virsh_cpu_ns,
        check,
        check_cpu_ns,
        warm_kib,
        after_kib,
        leak_probes,
    }
}

/// The libvirt tables.
pub fn tables(report: &mut String, results: &Results) {
    let r = results;
    let ns = |n: f64| us(Duration::from_nanos(n as u64));
    table(
        report,
        "The libvirt path: latency per probe",
        &["Path", "p50", "p99", "p50 ÷ floor"],
        1,
    );
    let _ = writeln!(
        report,
        "| Floor: virsh's shell, {} `qemu-agent-command` on one connection | {} | | 1.00 |",
        r.floor_commands,
        ms(r.floor)
    );
    let over = |d: Duration| d.as_secs_f64() / r.floor.as_secs_f64();
    let _ = writeln!(
        report,
        "| `/live` through the libvirt gateway, new connection each | {} | {} | {:.2} |",
        ms(r.live.p50()),
        ms(r.live.p99()),
        over(r.live.p50())
    );
    let _ = writeln!(
        report,
        "| `virsh qemu-agent-command` spawned per probe | {} | {} | {:.2} |",
        ms(r.virsh.p50()),
        ms(r.virsh.p99()),
        over(r.virsh.p50())
    );
    let _ = writeln!(
        report,
        "| `virt-probe-gateway-libvirt check liveness` spawned per probe | {} | {} | {:.2} |",
        ms(r.check.p50()),
        ms(r.check.p99()),
        over(r.check.p50())
    );
    let http = r.gateway_cpu_ns + r.daemon_cpu_http_ns;
    table(
        report,
        "The libvirt path: CPU per probe (all processes but QEMU)",
        &["Path", "CPU", "÷ HTTP probe"],
        1,
    );
    let _ = writeln!(
        report,
        "| `/live` through the gateway: gateway {} + libvirtd {} | {} | 1 |",
        ns(r.gateway_cpu_ns),
        ns(r.daemon_cpu_http_ns),
        ns(http)
    );
    let _ = writeln!(
        report,
        "| `virsh` per probe (virsh + libvirtd) | {} | {:.1} |",
        ns(r.virsh_cpu_ns),
        r.virsh_cpu_ns / http
    );
    let _ = writeln!(
        report,
        "| `check` per probe (the process + libvirtd) | {} | {:.1} |",
        ns(r.check_cpu_ns),
        r.check_cpu_ns / http
    );
    let _ = writeln!(
        report,
        "| libvirtd alone, per agent command in the floor (any client's least) | {} | {:.2} |",
        ns(r.floor_daemon_cpu_ns),
        r.floor_daemon_cpu_ns / http
    );
    table(
        report,
        "The libvirt gateway's memory",
        &["Measure", "VmRSS", "RssAnon"],
        1,
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let _ = writeln!(
        report,
        "| connected, after the warm-up | {} | {} |",
        mib(r.warm_kib.0),
        mib(r.warm_kib.1)
    );
    let _ = writeln!(
        report,
        "| after {} more probes | {} ({:+} KiB) | {} ({:+} KiB) |",
        r.leak_probes,
        mib(r.after_kib.0),
        r.after_kib.0 as i64 - r.warm_kib.0 as i64,
        mib(r.after_kib.1),
        r.after_kib.1 as i64 - r.warm_kib.1 as i64
    );
}
