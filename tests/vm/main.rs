//! End-to-end tests against a real VM: the gateway's HTTP API with the agent inside a
//! QEMU guest, behind a virtio-serial port (tests/vm/README.md). One at a time
//! (.config/nextest.toml): a guest under TCG wants a core to itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test harness: a failed set-up step panics with its message, which is the test's failure report"
)]
#![allow(
    unreachable_pub,
    reason = "a test binary: its support modules are `pub` to one another, nothing is exported"
)]

// The same harness as the agent tests (the gateway binary, `eventually`).
mod guest;
mod host;
mod image;
mod qga_client;
#[path = "../api/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use guest::{Vm, qemu_or_skip};
use qga_client::QgaClient;
use support::eventually;
use support::gateway::{Gateway, run_cli};

/// The seed example's probes.
const SEED: &str = "readinessProbe:\n  exec:\n    command: [\"cat\", \"/tmp/healthy.txt\"]\n  timeoutSeconds: 5\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
async fn seed_scenario_follows_the_file_in_the_guest() {
    if !qemu_or_skip("seed_scenario") {
        return;
    }
    let vm = Vm::boot();
    let mut control = vm.control().await;
    let gateway = Gateway::start(SEED, &vm.agent_socket());
    eventually("liveness to pass", Duration::from_secs(30), || async {
        gateway.get("/live").await.status == 200
    })
    .await;
    let reply = gateway.get("/ready").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "exec: exit code 1\n")
    );
    control.sh("echo ok > /tmp/healthy.txt").await;
    assert_eq!(gateway.get("/ready").await.status, 200);
    control.sh("rm /tmp/healthy.txt").await;
    assert_eq!(gateway.get("/ready").await.status, 503);
}

#[tokio::test]
async fn gateway_started_before_the_guest_boots_becomes_ready_without_a_restart() {
    if !qemu_or_skip("gateway_before_boot") {
        return;
    }
    let mut vm = Vm::prepare();
    // With no grace, liveness fails before the first contact.
    let mut strict = Gateway::start(
        &format!("livenessGraceSeconds: 0\n{SEED}"),
        &vm.agent_socket(),
    );
    assert_eq!(strict.get("/live").await.status, 503);
    strict.stop();

    let gateway = Gateway::start(SEED, &vm.agent_socket());
    let reply = gateway.get("/ready").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.starts_with("agent unavailable"),
        "{}",
        reply.body
    );
    vm.start();
    // The chardev socket accepts at once, but the guest needs seconds to boot: liveness
    // passes under its grace meanwhile (a 1 s ping cannot be answered that early).
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 200, "{report}");
    let note = report["reason"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("agent not reached yet (grace: "),
        "{report}"
    );
    let mut control = vm.control().await;
    control.sh("echo ok > /tmp/healthy.txt").await;
    eventually(
        "readiness once the guest agent answers",
        Duration::from_secs(60),
        || async { gateway.get("/ready").await.status == 200 },
    )
    .await;
    eprintln!(
        "boot to ready (QEMU start to the first 200 from /ready): {:.2} s",
        vm.started.elapsed().as_secs_f64()
    );
    let (status, report) = gateway.report("/live").await;
    assert_eq!((status, &report["reason"]), (200, &serde_json::Value::Null));
}

#[tokio::test]
async fn guest_agent_killed_in_the_guest_fails_probes_in_bounded_time_and_recovers() {
    if !qemu_or_skip("agent_killed") {
        return;
    }
    let vm = Vm::boot();
    let mut control = vm.control().await;
    let gateway = Gateway::start(
        &format!("livenessGraceSeconds: 0\n{SEED}"),
        &vm.agent_socket(),
    );
    eventually("liveness to pass", Duration::from_secs(30), || async {
        gateway.get("/live").await.status == 200
    })
    .await;
    // Stop the agent so that it stays down long enough to be seen, then kill it.
    control.sh("kill -STOP $(cat /run/qga0.pid)").await;
    let started = Instant::now();
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 503, "{report}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    control.sh("kill -KILL $(cat /run/qga0.pid)").await;
    eventually(
        "liveness to recover once init restarts the agent",
        Duration::from_secs(30),
        || async { gateway.get("/live").await.status == 200 },
    )
    .await;
    control.sh("echo ok > /tmp/healthy.txt").await;
    assert_eq!(gateway.get("/ready").await.status, 200);
}

#[tokio::test]
async fn stale_replies_left_on_the_virtio_serial_stream_are_not_taken_for_answers() {
    if !qemu_or_skip("stale_replies") {
        return;
    }
    let vm = Vm::boot();
    let mut control = vm.control().await;
    // An earlier client: a guest-exec of sleep and its status requests, then a half-written
    // request, and gone without reading a byte. The guest side of the port outlives it.
    {
        let mut earlier = QgaClient::connect(&vm.agent_socket(), Duration::from_secs(60)).await;
        earlier
            .call("guest-ping", serde_json::Value::Null)
            .await
            .expect("ping");
        use tokio::io::AsyncWriteExt;
        let raw = earlier.raw();
        raw.write_all(b"{\"execute\":\"guest-exec\",\"arguments\":{\"path\":\"sleep\",\"arg\":[\"1\"],\"capture-output\":true},\"id\":1}\n").await.unwrap();
        for id in 2..6 {
            raw.write_all(format!("{{\"execute\":\"guest-exec-status\",\"arguments\":{{\"pid\":1}},\"id\":{id}}}\n{{\"execute\":\"guest-info\",\"id\":{}}}\n", id + 100).as_bytes()).await.unwrap();
        }
        raw.write_all(b"{\"execute\":\"guest-exec\",\"argum")
            .await
            .unwrap();
        // Dropped here, unread.
    }
    let gateway = Gateway::start(SEED, &vm.agent_socket());
    for _ in 0..5 {
        let reply = gateway.get("/ready").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, "exec: exit code 1\n")
        );
        let (status, report) = gateway.report("/live").await;
        assert_eq!(status, 200, "{report}");
    }
    control.sh("echo ok > /tmp/healthy.txt").await;
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["exitCode"], 0);
}

#[tokio::test]
async fn exec_timeout_in_the_guest_starts_no_second_process() {
    if !qemu_or_skip("exec_timeout") {
        return;
    }
    let vm = Vm::boot();
    let mut control = vm.control().await;
    let marker = format!("vpg-timeout-{}", std::process::id());
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"sleep 4; true\", \"{marker}\"]\n  timeoutSeconds: 1\n"
    );
    let gateway = Gateway::start(&config, &vm.agent_socket());
    let (status, first) = gateway.report("/ready").await;
    assert_eq!(
        (status, first["result"].as_str()),
        (503, Some("timeout")),
        "{first}"
    );
    let (status, second) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert!(
        second["reason"]
            .as_str()
            .unwrap()
            .starts_with("previous command still running (pid "),
        "{second}"
    );
    let (_, running) = control.run("pgrep", &["-f", &marker]).await;
    assert_eq!(running.lines().count(), 1, "guest processes: {running:?}");
}

#[tokio::test]
async fn check_subcommand_runs_against_the_guest() {
    if !qemu_or_skip("check_subcommand") {
        return;
    }
    let vm = Vm::boot();
    let mut control = vm.control().await;
    // The agent port answers once the guest is up; wait for it with a client of our own.
    QgaClient::connect(&vm.agent_socket(), Duration::from_secs(60))
        .await
        .close()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seed.yaml");
    std::fs::write(&config, SEED).unwrap();
    let config = config.display().to_string();
    let agent = vm.agent_socket().display().to_string();
    let (code, stdout, stderr) = run_cli(
        &["check", "liveness", "--config", &config, "--agent", &agent],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = run_cli(
        &["check", "readiness", "--config", &config, "--agent", &agent],
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("exec: exit code 1"), "{stderr}");
    control.sh("echo ok > /tmp/healthy.txt").await;
    let (code, _, stderr) = run_cli(
        &["check", "readiness", "--config", &config, "--agent", &agent],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn latency_through_the_gateway_next_to_the_raw_round_trip() {
    if !qemu_or_skip("latency") {
        return;
    }
    const N: usize = 100;
    let vm = Vm::boot();
    let mut control = vm.control().await;
    control.sh("echo ok > /tmp/healthy.txt").await;

    let mut raw = QgaClient::connect(&vm.agent_socket(), Duration::from_secs(60)).await;
    let mut ping = Vec::new();
    let mut exec = Vec::new();
    for _ in 0..N {
        let t = Instant::now();
        raw.call("guest-ping", serde_json::Value::Null)
            .await
            .expect("ping");
        ping.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for _ in 0..N / 4 {
        let t = Instant::now();
        raw.run("cat", &["/tmp/healthy.txt"]).await;
        exec.push(t.elapsed().as_secs_f64() * 1e3);
    }
    raw.close().await;

    let gateway = Gateway::start(SEED, &vm.agent_socket());
    eventually("liveness to pass", Duration::from_secs(30), || async {
        gateway.get("/live").await.status == 200
    })
    .await;
    let mut live = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..N {
        let t = Instant::now();
        assert_eq!(gateway.get("/live").await.status, 200);
        live.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for _ in 0..N / 4 {
        let t = Instant::now();
        assert_eq!(gateway.get("/ready").await.status, 200);
        ready.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (raw_ping, raw_exec) = (percentile(&mut ping, 0.5), percentile(&mut exec, 0.5));
    let (gw_live, gw_ready) = (percentile(&mut live, 0.5), percentile(&mut ready, 0.5));
    eprintln!("| path (real VM, TCG, virtio-serial) | p50 ms | p99 ms | ratio to raw p50 |");
    eprintln!("|---|---|---|---|");
    eprintln!(
        "| raw guest-ping (test client) | {raw_ping:.3} | {:.3} | 1.00 |",
        percentile(&mut ping, 0.99)
    );
    eprintln!(
        "| GET /live via gateway (new connection) | {gw_live:.3} | {:.3} | {:.2} |",
        percentile(&mut live, 0.99),
        gw_live / raw_ping
    );
    eprintln!(
        "| raw guest-exec cat + status polls | {raw_exec:.3} | {:.3} | 1.00 |",
        percentile(&mut exec, 0.99)
    );
    eprintln!(
        "| GET /ready via gateway (exec cat) | {gw_ready:.3} | {:.3} | {:.2} |",
        percentile(&mut ready, 0.99),
        gw_ready / raw_exec
    );
}

/// KubeVirt hook mode end to end: the gateway adds its private channel at OnDefineDomain;
/// QEMU is started with that channel exactly as the returned domain XML describes it (the
/// compute container's `/var/run/kubevirt-hooks` is the hooks volume here); the guest runs
/// a second qemu-ga on `org.qemu.guest_agent.1`; another client holds
/// `org.qemu.guest_agent.0` the whole time, as libvirt does.
#[tokio::test]
async fn kubevirt_hook_mode_probes_through_the_private_channel_while_the_primary_is_held() {
    use support::hook::{channels, define, domain_fixture, vmi_with_probes};

    if !qemu_or_skip("kubevirt_hook") {
        return;
    }
    // The hooks volume; KubeVirt 1.6+ mounts its `hook-sidecar-0` sub-directory as the
    // sidecar's hooks dir.
    let volume = tempfile::tempdir().expect("temp dir");
    let hooks_dir = volume.path().join("hook-sidecar-0");
    let gateway = Gateway::start_hook(&hooks_dir, &[]);
    let vmi = vmi_with_probes(volume.path(), Some(SEED));
    let answer = define(
        &hooks_dir.join("probe-gateway.sock"),
        &domain_fixture(),
        &vmi,
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let xml = answer["domainXML"].as_str().expect("domain XML");

    // The <channel> element, translated into QEMU arguments as libvirt would.
    let mut vm = Vm::prepare();
    let private: Vec<_> = channels(xml)
        .into_iter()
        .filter(|c| c.target_name.as_deref() == Some("org.qemu.guest_agent.1"))
        .collect();
    assert_eq!(private.len(), 1, "{xml}");
    let channel = &private[0];
    assert_eq!(
        (
            channel.kind.as_deref(),
            channel.source_mode.as_deref(),
            channel.target_type.as_deref()
        ),
        (Some("unix"), Some("bind"), Some("virtio"))
    );
    let in_compute = channel.source_path.as_deref().expect("source path");
    let relative = in_compute
        .strip_prefix("/var/run/kubevirt-hooks/")
        .unwrap_or_else(|| panic!("{in_compute} is not in the hooks volume"));
    vm.add_channel(&volume.path().join(relative), "org.qemu.guest_agent.1");
    vm.start();

    // libvirt's place: the primary channel, held by another client throughout.
    let mut primary =
        qga_client::QgaClient::connect(&vm.agent_socket(), Duration::from_secs(90)).await;
    let mut control = vm.control().await;

    eventually(
        "liveness through the private channel",
        Duration::from_secs(60),
        || async {
            let (status, report) = gateway.report("/live").await;
            status == 200 && report["reason"] == serde_json::Value::Null
        },
    )
    .await;
    let reply = gateway.get("/ready").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "exec: exit code 1\n")
    );
    control.sh("echo ok > /tmp/healthy.txt").await;
    assert_eq!(gateway.get("/ready").await.status, 200);
    // The checks go through the second agent: stopped, they fail, while the primary
    // channel's agent still answers its own client.
    control.sh("kill -STOP $(cat /run/qga1.pid)").await;
    assert_eq!(gateway.get("/live").await.status, 503);
    assert!(
        primary
            .call("guest-ping", serde_json::json!({}))
            .await
            .is_ok(),
        "the primary channel's client lost its agent"
    );
    control.sh("kill -CONT $(cat /run/qga1.pid)").await;
    eventually(
        "liveness once the second agent runs again",
        Duration::from_secs(10),
        || async { gateway.get("/live").await.status == 200 },
    )
    .await;
    let mut samples = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        assert_eq!(gateway.get("/live").await.status, 200);
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    eprintln!(
        "hook mode /live through org.qemu.guest_agent.1 (new connection each): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99)
    );
    control.sh("rm /tmp/healthy.txt").await;
    assert_eq!(gateway.get("/ready").await.status, 503);
    primary.close().await;
}

/// What the gateway sees while QEMU pauses the guest (a healthy pause, a migration's
/// switch-over, post-copy): the virtio-serial channel stays connected and takes writes,
/// and nothing answers, exactly like a hung agent. Measured here: how soon liveness fails
/// after `stop`, and how soon it passes again after `cont` (late replies are not taken
/// for answers). The figures set the kubelet settings deploy/README.md recommends.
#[tokio::test]
async fn a_paused_guest_fails_liveness_after_its_timeout_and_recovers_at_once_on_resume() {
    if !qemu_or_skip("pause") {
        return;
    }
    let vm = Vm::boot();
    let _control = vm.control().await;
    let gateway = Gateway::start(
        "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n",
        &vm.agent_socket(),
    );
    eventually("liveness to pass", Duration::from_secs(30), || async {
        gateway.get("/live").await.status == 200
    })
    .await;

    let output = vm.monitor("stop").await;
    let paused = Instant::now();
    assert!(
        vm.monitor("info status").await.contains("paused"),
        "{output}"
    );
    let (status, report) = gateway.report("/live").await;
    let first_failure = paused.elapsed();
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["result"], "timeout", "{report}");
    // Every probe while paused fails the same way, within its timeout.
    let mut during = Vec::new();
    while paused.elapsed() < Duration::from_secs(5) {
        let started = Instant::now();
        let status = gateway.get("/live").await.status;
        during.push((status, started.elapsed()));
    }
    assert!(
        during.iter().all(|(status, _)| *status == 503),
        "{during:?}"
    );
    let slowest = during
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(1500),
        "answers within timeout + 0.5 s: {slowest:?}"
    );

    vm.monitor("cont").await;
    let resumed = Instant::now();
    eventually("liveness after resume", Duration::from_secs(15), || async {
        let (status, report) = gateway.report("/live").await;
        status == 200 && report["reason"] == serde_json::Value::Null
    })
    .await;
    let recovery = resumed.elapsed();
    eprintln!(
        "pause: first 503 {:.0} ms after stop; {} probes during 5 s paused, all 503, slowest {:.0} ms; first 200 {:.0} ms after cont",
        first_failure.as_secs_f64() * 1000.0,
        during.len(),
        slowest.as_secs_f64() * 1000.0,
        recovery.as_secs_f64() * 1000.0
    );
}
