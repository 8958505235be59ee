//! `scripts/bench.sh`: the gateway's cost per probe, side by side with the agent's own
//! round trip and with a process per probe, in one run, as Markdown tables for
//! BENCHMARKS.md. Absolute times drift on a shared machine; the ratios taken within one
//! run are the figures to read.
//!
//! The clients are this file's own (a minimal HTTP/1.1 client, a minimal agent client),
//! not a load tool: they time each request themselves, open a new connection per probe as
//! kubelet does, and add no runtime of their own to the two cores the gateway and the
//! agent share.

mod agent;
mod checks;
mod gateway;
mod http;
mod inject;
mod libvirt;
mod relay;
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::{QemuGa, RawAgent};
use gateway::Gateway;
use stats::{Samples, ms, ratio, us};

const CONFIG: &str = "readinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 5\n\
livenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 5\n";

/// Sample sizes, and how long each load level runs.
struct Plan {
    pings: usize,
    keep_alive: usize,
    new_connection: usize,
    processes: usize,
    execs: usize,
    load_time: Duration,
    leak_probes: usize,
    /// AdmissionReviews timed in the injector phase (and after which its memory is read).
    reviews: usize,
    startups: usize,
    /// How long the gateway's idle CPU is measured.
    idle_time: Duration,
    /// Interleaved rounds of the CPU-per-probe measurement.
    cpu_rounds: usize,
}

const FULL: Plan = Plan {
    pings: 20_000,
    keep_alive: 20_000,
    new_connection: 5_000,
    processes: 200,
    execs: 500,
    load_time: Duration::from_secs(4),
    leak_probes: 100_000,
    reviews: 100_000,
    startups: 30,
    idle_time: Duration::from_secs(10),
    cpu_rounds: 10,
};

/// `--quick`: a smoke run of every phase.
const QUICK: Plan = Plan {
    pings: 500,
    keep_alive: 500,
    new_connection: 200,
    processes: 10,
    execs: 20,
    load_time: Duration::from_millis(500),
    leak_probes: 2_000,
    reviews: 2_000,
    startups: 3,
    idle_time: Duration::from_secs(1),
    cpu_rounds: 3,
};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("relay") {
        let mut args = std::env::args().skip(2);
        let listen = args.next().and_then(|a| a.parse().ok());
        let agent = args.next();
        let (Some(listen), Some(agent)) = (listen, agent) else {
            panic!("usage: gateway-bench relay LISTEN_ADDRESS AGENT_SOCKET");
        };
        relay::serve(listen, Path::new(&agent));
    }
    let mut binary = PathBuf::from("target/release/virt-probe-gateway");
    let mut out = None;
    let mut plan = &FULL;
    let mut baseline = None;
    let mut session = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binary" => binary = args.next().expect("--binary PATH").into(),
            "--out" => out = Some(PathBuf::from(args.next().expect("--out PATH"))),
            "--quick" => plan = &QUICK,
            "--baseline" => baseline = Some(PathBuf::from(args.next().expect("--baseline PATH"))),
            "--libvirt" => {
                let mut next = || args.next().expect("--libvirt DIR DOMAIN UID GID");
                session = Some(libvirt::Session {
                    dir: next().into(),
                    domain: next(),
                    uid: next().parse().expect("UID"),
                    gid: next().parse().expect("GID"),
                });
            }
            other => panic!(
                "unknown argument {other}; use --binary PATH --out PATH --quick --baseline PATH \
                 --libvirt DIR DOMAIN UID GID"
            ),
        }
    }
    let binary =
        std::fs::canonicalize(&binary).expect("the release binary (cargo build --release)");
    let started = Instant::now();
    let mut report = String::new();
    machine(&mut report, &binary);

    eprintln!("bench: unpinned");
    let unpinned = run_pass(&binary, plan, None);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pinned = (cores >= 2).then(|| {
        eprintln!("bench: pinned (gateway on CPU 0; client and agent on CPU 1)");
        pin_self(1);
        let pass = run_pass(&binary, plan, Some(0));
        unpin_self(cores);
        pass
    });
    eprintln!("bench: memory and start-up");
    let memory = memory(&binary, plan);
    let startup = startup(&binary, plan);

    latency_table(&mut report, &unpinned, pinned.as_ref());
    cost_table(&mut report, &unpinned, pinned.as_ref());
    load_table(&mut report, &unpinned, pinned.as_ref());
    footprint_table(&mut report, &memory, &startup, &binary);
    eprintln!("bench: the injector");
    let repo = std::env::current_dir().expect("the repository (scripts/bench.sh runs there)");
    let reviews = inject::run(&binary, &repo, plan.reviews);
    inject::tables(&mut report, &reviews);
    eprintln!("bench: named checks");
    let rows = checks::run(&binary, plan.new_connection, plan.execs, plan.cpu_rounds);
    checks::tables(&mut report, &rows);
    if let Some(session) = &session {
        eprintln!("bench: the libvirt path");
        let results = libvirt::run(
            session,
            plan.new_connection,
            plan.processes,
            plan.leak_probes,
        );
        libvirt::tables(&mut report, &results);
    }
    if let Some(baseline) = baseline {
        eprintln!("bench: against the baseline {}", baseline.display());
        baseline_table(&mut report, &baseline, &binary, plan);
    }
    let _ = writeln!(
        report,
        "\nThe run took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    print!("{report}");
    if let Some(out) = out {
        std::fs::write(&out, &report).expect("write the report");
        eprintln!("bench: tables written to {}", out.display());
    }
}

/// What one pass measures, with everything placed one way (pinned or not).
struct Pass {
    ping: Samples,
    /// `GET /live` through the gateway.
    gateway: Through,
    /// The same through the bench's ideal relay ([`relay`]).
    relay: Through,
    process_wall: Samples,
    cpu: Cpu,
    exec_raw: Samples,
    exec_gateway: Samples,
    load: Vec<Load>,
}

/// Sequential `GET /live` through a server in the path: latency.
struct Through {
    keep_alive: Samples,
    new_connection: Samples,
}

/// One `GET /live` on a new connection, as kubelet probes.
fn live_once(server: &Gateway) {
    assert_eq!(
        http::get_once(server.address, "/live").expect("GET /live"),
        200
    );
}

/// One `GET /live` over a kept connection.
fn live_on(connection: &mut http::Connection) {
    assert_eq!(connection.get("/live", false).expect("GET /live"), 200);
}

/// `GET /live` one at a time through `server`: over one keep-alive connection, then on a
/// new connection each, as kubelet does.
fn through(server: &Gateway, plan: &Plan) -> Through {
    let keep_alive = {
        let mut connection = http::Connection::open(server.address).expect("connect");
        timed(plan.keep_alive / 10, plan.keep_alive, || {
            live_on(&mut connection)
        })
    };
    let new_connection = timed(plan.new_connection / 10, plan.new_connection, || {
        live_once(server)
    });
    Through {
        keep_alive,
        new_connection,
    }
}

/// CPU per probe (ns) of each path, taken in interleaved rounds: each round measures
/// every path one after the other, so a neighbour's burst on the shared machine (its
/// steal time counts as run time) lands in one round of all paths rather than in all of
/// one path's figure. Each figure is the median over the rounds.
struct Cpu {
    rounds: usize,
    median: Round,
    /// Process ÷ gateway, per round: (median, lowest, highest).
    ratio_new_connection: (f64, f64, f64),
    ratio_keep_alive: (f64, f64, f64),
}

/// CPU per probe (ns) of each path in one round.
struct Round {
    process: f64,
    gateway_new_connection: f64,
    gateway_keep_alive: f64,
    relay_new_connection: f64,
    relay_keep_alive: f64,
}

/// `plan.cpu_rounds` rounds of: processes per probe, then new-connection and keep-alive
/// probes through the gateway and through the relay. Runs after the latency phases,
/// which warmed up all three (page cache, allocators, connections).
fn cpu_rounds(binary: &Path, agent: &Path, gateway: &Gateway, relay: &Gateway, plan: &Plan) -> Cpu {
    let check = CheckProcess::new(binary, agent);
    let processes = (plan.processes / plan.cpu_rounds).max(1);
    let new_connections = (plan.new_connection / plan.cpu_rounds).max(1);
    let keep_alives = (plan.keep_alive / plan.cpu_rounds).max(1);
    let new_connection_cpu =
        |server: &Gateway| cpu_per_probe(server, new_connections, || live_once(server));
    let keep_alive_cpu = |server: &Gateway| {
        let mut connection = http::Connection::open(server.address).expect("connect");
        cpu_per_probe(server, keep_alives, || live_on(&mut connection))
    };
    let rounds: Vec<Round> = (0..plan.cpu_rounds)
        .map(|_| {
            let before = children_cpu_ns();
            for _ in 0..processes {
                check.run();
            }
            Round {
                process: (children_cpu_ns() - before) as f64 / processes as f64,
                gateway_new_connection: new_connection_cpu(gateway),
                gateway_keep_alive: keep_alive_cpu(gateway),
                relay_new_connection: new_connection_cpu(relay),
                relay_keep_alive: keep_alive_cpu(relay),
            }
        })
        .collect();
    let of = |field: fn(&Round) -> f64| spread(&rounds.iter().map(field).collect::<Vec<_>>());
    Cpu {
        rounds: rounds.len(),
        median: Round {
            process: of(|r| r.process).0,
            gateway_new_connection: of(|r| r.gateway_new_connection).0,
            gateway_keep_alive: of(|r| r.gateway_keep_alive).0,
            relay_new_connection: of(|r| r.relay_new_connection).0,
            relay_keep_alive: of(|r| r.relay_keep_alive).0,
        },
        ratio_new_connection: of(|r| r.process / r.gateway_new_connection.max(1.0)),
        ratio_keep_alive: of(|r| r.process / r.gateway_keep_alive.max(1.0)),
    }
}

/// `server`'s CPU per `probe`, ns, over `count` of them.
fn cpu_per_probe(server: &Gateway, count: usize, mut probe: impl FnMut()) -> f64 {
    let before = server.cpu_ns();
    for _ in 0..count {
        probe();
    }
    (server.cpu_ns() - before) as f64 / count as f64
}

/// (median, lowest, highest) of `values`.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.as_slice() {
        [] => (0.0, 0.0, 0.0),
        all => (all[all.len() / 2], all[0], all[all.len() - 1]),
    }
}

struct Load {
    clients: usize,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latency: Samples,
    cpu_share: f64,
    pings_per_request: f64,
}

fn run_pass(binary: &Path, plan: &Plan, gateway_core: Option<usize>) -> Pass {
    // Two agents: the gateway holds one; the other is measured without it (a listening
    // agent serves one client at a time).
    let held = QemuGa::start();
    let free = QemuGa::start();
    let gateway = Gateway::start(binary, CONFIG, &held.socket(), gateway_core);

    let ping = {
        let mut raw = RawAgent::connect(&free.socket());
        let samples = timed(plan.pings / 10, plan.pings, || raw.ping());
        raw.close();
        samples
    };
    let through_gateway = through(&gateway, plan);
    let relayed = QemuGa::start();
    let relay = Gateway::start_relay(&relayed.socket(), gateway_core);
    let through_relay = through(&relay, plan);
    let process_wall = process_per_probe(binary, &free.socket(), plan.processes);
    let cpu = cpu_rounds(binary, &free.socket(), &gateway, &relay, plan);
    drop(relay);
    let exec_raw = {
        let mut raw = RawAgent::connect(&free.socket());
        let samples = timed(plan.execs / 10, plan.execs, || {
            assert_eq!(raw.exec("true"), 0)
        });
        raw.close();
        samples
    };
    let exec_gateway = {
        let mut connection = http::Connection::open(gateway.address).expect("connect");
        timed(plan.execs / 10, plan.execs, || {
            assert_eq!(connection.get("/ready", false).expect("GET /ready"), 200)
        })
    };
    let load = [1, 10, 100]
        .into_iter()
        .map(|clients| load(&gateway, clients, plan.load_time))
        .collect();
    drop(gateway);
    Pass {
        ping,
        gateway: through_gateway,
        relay: through_relay,
        process_wall,
        cpu,
        exec_raw,
        exec_gateway,
        load,
    }
}

/// Runs `op` `warmup` times untimed, then `count` times timed.
pub(crate) fn timed(warmup: usize, count: usize, mut op: impl FnMut()) -> Samples {
    for _ in 0..warmup {
        op();
    }
    let mut samples = Samples::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        op();
        samples.push(started.elapsed());
    }
    samples
}

/// `virt-probe-gateway check liveness` as an exec probe would run it, without the
/// container runtime's own cost.
struct CheckProcess {
    binary: PathBuf,
    agent: PathBuf,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl CheckProcess {
    fn new(binary: &Path, agent: &Path) -> CheckProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, CONFIG).expect("write config");
        CheckProcess {
            binary: binary.to_path_buf(),
            agent: agent.to_path_buf(),
            _dir: dir,
            config,
        }
    }

    fn run(&self) {
        let status = Command::new(&self.binary)
            .args(["check", "liveness", "--config"])
            .arg(&self.config)
            .arg("--agent")
            .arg(&self.agent)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run check");
        assert!(status.success(), "check liveness failed");
    }
}

/// Wall time of a process per probe.
fn process_per_probe(binary: &Path, socket: &Path, count: usize) -> Samples {
    let check = CheckProcess::new(binary, socket);
    timed(count / 10, count, || check.run())
}

pub(crate) fn children_cpu_ns() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let ns =
        |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1_000;
    ns(usage.user_time()) + ns(usage.system_time())
}

/// `clients` kubelet-like clients (a new connection per probe, back to back) on `/live`
/// for `time`.
fn load(gateway: &Gateway, clients: usize, time: Duration) -> Load {
    let pings = "probe_gateway_agent_commands_total{command=\"guest-ping\"";
    let pings_before = gateway.metric(pings);
    let cpu_before = gateway.cpu_ns();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let address = gateway.address;
            std::thread::spawn(move || {
                let mut samples = Samples::with_capacity(4096);
                let mut errors = 0;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match http::get_once(address, "/live") {
                        Ok(200) => samples.push(sent.elapsed()),
                        _ => errors += 1,
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let mut latency = Samples::default();
    let mut errors = 0;
    for worker in workers {
        let (samples, failed) = worker.join().expect("client thread");
        latency.extend(samples);
        errors += failed;
    }
    let elapsed = started.elapsed();
    let cpu = gateway.cpu_ns() - cpu_before;
    let requests = latency.len();
    // The metrics scrape itself is not a probe; it sends no agent command.
    let pings_sent = gateway.metric(pings) - pings_before;
    Load {
        clients,
        requests,
        errors,
        elapsed,
        latency,
        cpu_share: cpu as f64 / elapsed.as_nanos() as f64,
        pings_per_request: pings_sent / requests.max(1) as f64,
    }
}

struct Memory {
    idle_kib: u64,
    /// CPU used while idle, in millicores (ms of CPU per s).
    idle_millicores: f64,
    idle_time: Duration,
    peak_kib: u64,
    warm_kib: u64,
    after_kib: u64,
    probes: usize,
    threads: usize,
}

/// RSS idle, peak under 100 clients, and before/after `leak_probes` probes.
fn memory(binary: &Path, plan: &Plan) -> Memory {
    let agent = QemuGa::start();
    let gateway = Gateway::start(binary, CONFIG, &agent.socket(), None);
    std::thread::sleep(Duration::from_millis(200));
    let idle_kib = gateway.status_kib("VmRSS");
    let threads = gateway.threads();
    // Idle: serving nothing, holding its agent connection (its timers still tick).
    let cpu = gateway.cpu_ns();
    std::thread::sleep(plan.idle_time);
    let idle_millicores = (gateway.cpu_ns() - cpu) as f64 / plan.idle_time.as_secs_f64() / 1e6;
    let _ = load(&gateway, 100, plan.load_time);
    let peak_kib = gateway.status_kib("VmHWM");
    // Warm up (allocator arenas, connection buffers), then count.
    let probe_all = |count: usize| {
        let per_client = count / 4;
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let address = gateway.address;
                std::thread::spawn(move || {
                    let mut connection = http::Connection::open(address).expect("connect");
                    for i in 0..per_client {
                        let path = if i % 10 == 0 { "/ready" } else { "/live" };
                        assert_eq!(connection.get(path, false).expect("GET"), 200);
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client");
        }
    };
    probe_all(plan.leak_probes / 10);
    let warm_kib = gateway.status_kib("VmRSS");
    probe_all(plan.leak_probes);
    let after_kib = gateway.status_kib("VmRSS");
    Memory {
        idle_kib,
        idle_millicores,
        idle_time: plan.idle_time,
        peak_kib,
        warm_kib,
        after_kib,
        probes: plan.leak_probes,
        threads,
    }
}

/// Process start to the first `200` from `/healthz`.
fn startup(binary: &Path, plan: &Plan) -> Samples {
    let agent = QemuGa::start();
    let mut samples = Samples::default();
    for _ in 0..plan.startups {
        let (gateway, took) = Gateway::start_timed(binary, CONFIG, &agent.socket(), None);
        samples.push(took);
        drop(gateway);
    }
    samples
}

fn pin_self(core: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(core).expect("cpu set");
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin the bench");
}

fn unpin_self(cores: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    for core in 0..cores {
        let _ = set.set(core);
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("unpin the bench");
}

fn machine(report: &mut String, binary: &Path) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qga = Command::new(
        ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("qemu-ga"),
    )
    .arg("--version")
    .output()
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
    .unwrap_or_default();
    let _ = writeln!(report, "## Run\n");
    let _ = writeln!(report, "- CPU: {cpu}, {cores} cores available");
    let _ = writeln!(report, "- Linux {}", kernel.trim());
    let _ = writeln!(report, "- {}", qga.trim());
    let _ = writeln!(report, "- Gateway: `{}`", binary.display());
}

fn latency_table(report: &mut String, unpinned: &Pass, pinned: Option<&Pass>) {
    table(
        report,
        "Latency per probe",
        &[
            "Path",
            "Placement",
            "p50",
            "p99",
            "p50 ÷ floor",
            "p50 − floor",
        ],
        2,
    );
    for (placement, pass) in passes(unpinned, pinned) {
        let floor = pass.ping.p50();
        let mut row = |path: &str, samples: &Samples, floor: Duration| {
            let over = samples.p50().saturating_sub(floor);
            let _ = writeln!(
                report,
                "| {path} | {placement} | {} | {} | {} | {} |",
                us(samples.p50()),
                us(samples.p99()),
                ratio(samples.p50(), floor),
                us(over)
            );
        };
        row("raw `guest-ping` (floor)", &pass.ping, floor);
        row("`GET /live`, keep-alive", &pass.gateway.keep_alive, floor);
        row(
            "`GET /live`, new connection each",
            &pass.gateway.new_connection,
            floor,
        );
        row("ideal relay, keep-alive", &pass.relay.keep_alive, floor);
        row(
            "ideal relay, new connection each",
            &pass.relay.new_connection,
            floor,
        );
        row(
            "process per probe (`check liveness`)",
            &pass.process_wall,
            floor,
        );
        let exec_floor = pass.exec_raw.p50();
        row(
            "raw `guest-exec` + status of `true` (exec floor)",
            &pass.exec_raw,
            exec_floor,
        );
        row(
            "`GET /ready` (exec `true`), keep-alive",
            &pass.exec_gateway,
            exec_floor,
        );
    }
}

fn cost_table(report: &mut String, unpinned: &Pass, pinned: Option<&Pass>) {
    table(
        report,
        "CPU per probe",
        &[
            "Placement",
            "process per probe",
            "gateway, new connection",
            "gateway, keep-alive",
            "ideal relay, new connection",
            "ideal relay, keep-alive",
            "process ÷ gateway, new connection (rounds)",
            "process ÷ gateway, keep-alive (rounds)",
        ],
        1,
    );
    let cpu = |ns: f64| us(Duration::from_nanos(ns as u64));
    let range = |(median, low, high): (f64, f64, f64)| format!("{median:.1}× ({low:.1}–{high:.1})");
    for (placement, pass) in passes(unpinned, pinned) {
        let c = &pass.cpu.median;
        let _ = writeln!(
            report,
            "| {placement} | {} | {} | {} | {} | {} | {} | {} |",
            cpu(c.process),
            cpu(c.gateway_new_connection),
            cpu(c.gateway_keep_alive),
            cpu(c.relay_new_connection),
            cpu(c.relay_keep_alive),
            range(pass.cpu.ratio_new_connection),
            range(pass.cpu.ratio_keep_alive),
        );
    }
    let _ = writeln!(
        report,
        "\nMedians over {} interleaved rounds; the ratios are the median round's, with the \
         lowest and highest round's in brackets.",
        unpinned.cpu.rounds
    );
    table(
        report,
        "The gateway beside the ideal relay",
        &[
            "Placement",
            "p50 keep-alive: gateway ÷ relay",
            "p50 new connection: gateway ÷ relay",
            "CPU keep-alive: gateway ÷ relay",
            "CPU new connection: gateway ÷ relay",
            "relay p50 ÷ floor (keep-alive)",
        ],
        1,
    );
    for (placement, pass) in passes(unpinned, pinned) {
        let (gateway, relay, c) = (&pass.gateway, &pass.relay, &pass.cpu.median);
        let _ = writeln!(
            report,
            "| {placement} | {} | {} | {:.2}× | {:.2}× | {} |",
            ratio(gateway.keep_alive.p50(), relay.keep_alive.p50()),
            ratio(gateway.new_connection.p50(), relay.new_connection.p50()),
            c.gateway_keep_alive / c.relay_keep_alive.max(1.0),
            c.gateway_new_connection / c.relay_new_connection.max(1.0),
            ratio(relay.keep_alive.p50(), pass.ping.p50()),
        );
    }
}

fn load_table(report: &mut String, unpinned: &Pass, pinned: Option<&Pass>) {
    table(
        report,
        "Load: kubelet-like clients on `/live`, a new connection per probe",
        &[
            "Placement",
            "clients",
            "requests/s",
            "p50",
            "p99",
            "errors",
            "gateway CPU",
            "`guest-ping` per request",
        ],
        1,
    );
    for (placement, pass) in passes(unpinned, pinned) {
        for load in &pass.load {
            let _ = writeln!(
                report,
                "| {placement} | {} | {:.0} | {} | {} | {} | {:.0}% | {:.3} |",
                load.clients,
                load.requests as f64 / load.elapsed.as_secs_f64(),
                us(load.latency.p50()),
                us(load.latency.p99()),
                load.errors,
                load.cpu_share * 100.0,
                load.pings_per_request
            );
        }
    }
}

fn footprint_table(report: &mut String, memory: &Memory, startup: &Samples, binary: &Path) {
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let size = std::fs::metadata(binary).map_or(0, |m| m.len());
    table(report, "Footprint", &["Measure", "Value"], 1);
    let _ = writeln!(
        report,
        "| RSS idle after start | {} |",
        mib(memory.idle_kib)
    );
    let _ = writeln!(
        report,
        "| RSS peak (VmHWM) after 100 clients | {} |",
        mib(memory.peak_kib)
    );
    let _ = writeln!(
        report,
        "| RSS after a warm-up of {} probes | {} |",
        memory.probes / 10,
        mib(memory.warm_kib)
    );
    let _ = writeln!(
        report,
        "| RSS after {} more probes | {} ({:+} KiB) |",
        memory.probes,
        mib(memory.after_kib),
        memory.after_kib as i64 - memory.warm_kib as i64
    );
    let _ = writeln!(report, "| Threads | {} |", memory.threads);
    let _ = writeln!(
        report,
        "| CPU idle (over {:.0} s) | {:.2} millicores |",
        memory.idle_time.as_secs_f64(),
        memory.idle_millicores
    );
    let _ = writeln!(
        report,
        "| Start-up to first `200` from `/healthz` | p50 {}, max {} |",
        ms(startup.p50()),
        ms(startup.quantile(1.0))
    );
    let _ = writeln!(
        report,
        "| Release binary (stripped) | {:.1} MiB |",
        size as f64 / 1048576.0
    );
}

/// The same unpinned pass of `baseline` and `binary`, back to back, twice (A/B/A/B):
/// a before and after of a change, in one run.
fn baseline_table(report: &mut String, baseline: &Path, binary: &Path, plan: &Plan) {
    let runs: Vec<(&str, Pass)> = [
        (baseline, "before"),
        (binary, "after"),
        (baseline, "before"),
        (binary, "after"),
    ]
    .into_iter()
    .map(|(path, label)| (label, run_pass(path, plan, None)))
    .collect();
    table(
        report,
        "Before and after (unpinned, A/B/A/B in one run)",
        &[
            "Binary",
            "floor p50",
            "keep-alive p50 (÷ floor)",
            "new connection p50 (÷ floor)",
            "CPU per probe, keep-alive",
            "CPU per probe, new connection",
        ],
        1,
    );
    for (label, pass) in &runs {
        let floor = pass.ping.p50();
        let _ = writeln!(
            report,
            "| {label} | {} | {} ({}) | {} ({}) | {} | {} |",
            us(floor),
            us(pass.gateway.keep_alive.p50()),
            ratio(pass.gateway.keep_alive.p50(), floor),
            us(pass.gateway.new_connection.p50()),
            ratio(pass.gateway.new_connection.p50(), floor),
            us(Duration::from_nanos(
                pass.cpu.median.gateway_keep_alive as u64
            )),
            us(Duration::from_nanos(
                pass.cpu.median.gateway_new_connection as u64
            )),
        );
    }
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len()) as f64 / 1048576.0;
    let _ = writeln!(
        report,
        "\nBinary size: before {:.1} MiB, after {:.1} MiB.",
        size(baseline),
        size(binary)
    );
}

/// A section heading and a table's header: the first `text` columns are left-aligned,
/// the figures after them right-aligned.
pub(crate) fn table(report: &mut String, title: &str, columns: &[&str], text: usize) {
    let align: Vec<&str> = (0..columns.len())
        .map(|i| if i < text { "---" } else { "---:" })
        .collect();
    let _ = writeln!(report, "\n## {title}\n");
    let _ = writeln!(report, "| {} |", columns.join(" | "));
    let _ = writeln!(report, "|{}|", align.join("|"));
}

fn passes<'a>(unpinned: &'a Pass, pinned: Option<&'a Pass>) -> Vec<(&'static str, &'a Pass)> {
    let mut all = vec![("unpinned", unpinned)];
    if let Some(pinned) = pinned {
        all.push(("pinned", pinned));
    }
    all
}
