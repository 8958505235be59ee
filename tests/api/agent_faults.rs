//! Faults of a real qemu-ga: hung, killed and restarted, disabled commands, stuck guest
//! commands, lost replies, shutdowns mid-command, and load while it restarts.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;
use crate::support::{eventually, processes_with, unique_marker};

const LIVE_1S: &str =
    "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

#[tokio::test]
async fn a_hung_agent_fails_probes_in_time_and_its_late_replies_are_never_taken() {
    let agent = QemuGa::start();
    let config = format!(
        "{LIVE_1S}readinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"exit 7\"]\n  timeoutSeconds: 1\n"
    );
    let gateway = Gateway::start(&config, agent.socket());
    assert_eq!(gateway.get("/live").await.status, 200);
    agent.signal(Signal::SIGSTOP);
    for path in ["/live", "/ready", "/live"] {
        let started = Instant::now();
        let (status, report) = gateway.report(path).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{path}: {report}");
        assert_eq!(report["result"], "timeout", "{path}: {report}");
        assert!(took < Duration::from_millis(1500), "{path} took {took:?}");
    }
    agent.signal(Signal::SIGCONT);
    // The agent now answers the pings and the guest-exec it queued: none of those late
    // replies may pass for the answer to a new probe, and the next probe passes.
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually(
        "the late guest-exec's process to be reaped",
        Duration::from_secs(5),
        || async {
            let (_, report) = gateway.report("/ready").await;
            report["reason"] == "exec: exit code 7"
        },
    )
    .await;
    let (_, report) = gateway.report("/live").await;
    assert_eq!(report["result"], "success");
}

#[tokio::test]
async fn an_agent_killed_and_restarted_repeatedly_never_hangs_a_request_and_recovers_fast() {
    let mut agent = QemuGa::start();
    let gateway = Gateway::start(LIVE_1S, agent.socket());
    let mut recoveries = Vec::new();
    for _ in 0..5 {
        assert_eq!(gateway.get("/live").await.status, 200);
        agent.kill();
        let started = Instant::now();
        let reply = gateway.get("/live").await;
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(started.elapsed() < Duration::from_millis(1500));
        agent.launch();
        let back = Instant::now();
        eventually(
            "liveness after the restart",
            Duration::from_secs(2),
            || async { gateway.get("/live").await.status == 200 },
        )
        .await;
        recoveries.push(back.elapsed());
    }
    eprintln!("recovery after agent restart (socket back to first 200): {recoveries:?}");
    assert!(
        !gateway
            .logs()
            .iter()
            .any(|e| e.to_string().contains("panicked")),
        "a panic in the log"
    );
}

#[tokio::test]
async fn a_socket_nobody_listens_on_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dead.sock");
    // Bound, then the listener gone: the file stays, connects are refused.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let gateway = Gateway::start(LIVE_1S, &socket);
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 503);
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("Connection refused"), "{reason}");
    let missing = Gateway::start(LIVE_1S, &dir.path().join("missing.sock"));
    let (_, report) = missing.report("/live").await;
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("No such file or directory"),
        "{report}"
    );
}

#[tokio::test]
async fn a_disabled_guest_ping_is_reported_as_disabled() {
    let agent = QemuGa::start_with(&["-b", "guest-ping"]);
    let gateway = Gateway::start(LIVE_1S, agent.socket());
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 503);
    assert_eq!(
        report["reason"],
        "guest-ping is disabled in the guest agent"
    );
}

#[tokio::test]
async fn a_stuck_command_probed_50_times_leaves_exactly_one_guest_process() {
    let agent = QemuGa::start();
    let marker = unique_marker("stuck");
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"sleep 1000; true\", \"{marker}\"]\n  timeoutSeconds: 1\n"
    );
    let gateway = Gateway::start(&config, agent.socket());
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let (status, report) = gateway.report("/ready").await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            (status, report["result"].as_str()),
            (503, Some("timeout")),
            "{report}"
        );
    }
    let running = processes_with(&marker);
    eprintln!(
        "guest processes after 50 probes of a stuck command: {}",
        running.len()
    );
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest probe {slowest:?}"
    );
    // End it, children included (the agent waits for the output pipes to close, and
    // the shell's `sleep` holds them): the next probes run a fresh command.
    for pid in running {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    eventually(
        "a fresh command to start",
        Duration::from_secs(5),
        || async {
            let (_, report) = gateway.report("/ready").await;
            report["reason"] == "timed out after 1s"
        },
    )
    .await;
    assert_eq!(processes_with(&marker).len(), 1);
}

#[tokio::test]
async fn a_guest_exec_reply_lost_to_a_timeout_is_tracked_when_it_arrives() {
    let agent = QemuGa::start();
    let marker = unique_marker("lost");
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"sleep 2; true\", \"{marker}\"]\n  timeoutSeconds: 3\n"
    );
    let gateway = Gateway::start(&config, agent.socket());
    assert_eq!(gateway.get("/ready").await.status, 200);
    assert!(processes_with(&marker).is_empty());
    // Stopped between request and reply: the guest-exec waits in the socket, unanswered.
    agent.signal(Signal::SIGSTOP);
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(
        (status, report["result"].as_str()),
        (503, Some("timeout")),
        "{report}"
    );
    assert!(processes_with(&marker).is_empty());
    agent.signal(Signal::SIGCONT);
    // The agent now starts the process and answers late; the gateway tracks that pid.
    let tracked = |reason: &str| {
        reason.starts_with("previous command still running (pid ")
            && reason[36..].starts_with(|c: char| c.is_ascii_digit())
    };
    eventually(
        "the late pid to be tracked",
        Duration::from_secs(5),
        || async {
            let (_, report) = gateway.report("/ready").await;
            tracked(report["reason"].as_str().unwrap_or_default())
        },
    )
    .await;
    let (_, report) = gateway.report("/ready").await;
    let tracked = report["reason"].as_str().unwrap_or_default().to_string();
    let running = processes_with(&marker);
    assert_eq!(running.len(), 1, "no untracked or second process");
    assert!(
        tracked.contains(&format!("(pid {})", running[0])),
        "{tracked} vs {running:?}"
    );
}

#[tokio::test]
async fn sigterm_mid_command_ten_times_exits_within_the_grace_and_the_agent_lives() {
    let mut agent = QemuGa::start();
    let marker = unique_marker("term");
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"sleep 0.3; true\", \"{marker}\"]\n  timeoutSeconds: 5\n"
    );
    for round in 0..10 {
        let mut gateway = Gateway::start_with(
            &config,
            &[
                "--agent",
                &agent.socket().display().to_string(),
                "--shutdown-grace",
                "2",
            ],
        );
        let url = gateway.url("/ready");
        let in_flight =
            tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
        eventually(
            "the guest command to start",
            Duration::from_secs(5),
            || async { !processes_with(&marker).is_empty() },
        )
        .await;
        let started = Instant::now();
        gateway.signal(Signal::SIGTERM);
        let exit = gateway.wait_exit(Duration::from_secs(5));
        assert!(exit.success(), "round {round}: {exit}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {round}: {:?}",
            started.elapsed()
        );
        let _ = in_flight.await;
        assert!(agent.is_running(), "round {round}: the agent died");
        eventually("the command to end", Duration::from_secs(5), || async {
            processes_with(&marker).is_empty()
        })
        .await;
    }
    assert!(agent.answers_ping());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_during_two_agent_restarts_get_only_200_or_503_in_time() {
    let mut agent = QemuGa::start();
    let config = format!(
        "{LIVE_1S}readinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 1\n"
    );
    let gateway = Gateway::start(&config, agent.socket());
    let until = Instant::now() + Duration::from_secs(10);
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..200 {
        let url = gateway.url(if i % 2 == 0 { "/live" } else { "/ready" });
        clients.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut seen = (0u32, 0u32, Vec::new(), Duration::ZERO);
            while Instant::now() < until {
                let started = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => seen.0 += 1,
                    Ok(r) if r.status() == 503 => seen.1 += 1,
                    Ok(r) => seen.2.push(r.status().as_u16()),
                    Err(e) => panic!("request failed: {e}"),
                }
                seen.3 = seen.3.max(started.elapsed());
            }
            seen
        });
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        agent.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        agent.launch();
    }
    let (mut ok, mut unavailable, mut slowest) = (0, 0, Duration::ZERO);
    for seen in clients.join_all().await {
        assert!(seen.2.is_empty(), "other statuses: {:?}", seen.2);
        ok += seen.0;
        unavailable += seen.1;
        slowest = slowest.max(seen.3);
    }
    eprintln!(
        "200 clients for 10 s, 2 agent restarts: {ok} x 200, {unavailable} x 503, slowest {slowest:?}"
    );
    assert!(ok > 0 && unavailable > 0);
    // Within the probe timeout + 0.5 s, plus what 200 concurrent connections on two
    // shared cores add in accept and scheduling.
    assert!(slowest < Duration::from_millis(3000), "slowest {slowest:?}");
    assert!(
        !gateway
            .logs()
            .iter()
            .any(|e| e.to_string().contains("panicked"))
    );
    assert!(agent.is_running());
}
