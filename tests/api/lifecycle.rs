//! Start-up and shutdown.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::eventually;
use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;
use crate::support::unique_marker;

#[tokio::test]
async fn sigterm_during_an_exec_finishes_the_request_exits_0_and_the_agent_survives() {
    let mut agent = QemuGa::start();
    let marker = unique_marker("sigterm");
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"sleep 1; true\", \"{marker}\"]\n  timeoutSeconds: 10\n"
    );
    let mut gateway = Gateway::start(&config, agent.socket());
    let url = gateway.url("/ready");
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    eventually(
        "the guest process to start",
        Duration::from_secs(5),
        || async { !crate::support::processes_with(&marker).is_empty() },
    )
    .await;
    gateway.signal(Signal::SIGTERM);
    let status = in_flight.await.unwrap();
    assert_eq!(
        status.ok(),
        Some(200),
        "the in-flight probe was not finished"
    );
    let exit = gateway.wait_exit(Duration::from_secs(10));
    assert!(exit.success(), "exit status {exit}");
    assert!(agent.is_running(), "the agent died with the gateway");
    assert!(agent.answers_ping(), "the agent no longer answers");
    let events = gateway.logs();
    assert!(
        events.iter().any(|e| e["message"] == "stopped"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn sigint_stops_an_idle_gateway_with_exit_0() {
    let mut agent = QemuGa::start();
    let mut gateway = Gateway::start("livenessProbe:\n  guestAgentPing: {}\n", agent.socket());
    assert_eq!(gateway.get("/live").await.status, 200);
    gateway.signal(Signal::SIGINT);
    assert!(gateway.wait_exit(Duration::from_secs(10)).success());
    assert!(agent.is_running());
    assert!(agent.answers_ping());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_up_shutdown() {
    let agent = QemuGa::start();
    let mut gateway = Gateway::start_with(
        "livenessProbe:\n  guestAgentPing: {}\n",
        &[
            "--agent",
            &agent.socket().display().to_string(),
            "--shutdown-grace",
            "30",
        ],
    );
    // A client that keeps its connection open after its answer, as kubelet's would not
    // but a curl loop or an OpenAPI client may.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let status = client.get(gateway.url("/live")).send().await.expect("GET");
    assert_eq!(status.status().as_u16(), 200);
    let started = std::time::Instant::now();
    gateway.signal(Signal::SIGTERM);
    assert!(gateway.wait_exit(Duration::from_secs(20)).success());
    // Closed at once, not after the 30 s grace nor the 5 s keep-alive timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !gateway.logs().iter().any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("grace elapsed")),
        "{:#?}",
        gateway.logs()
    );
    drop(client);
}

/// The names of the gateway's threads.
fn thread_names(gateway: &Gateway) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{}/task", gateway.pid()))
        .expect("the gateway's threads")
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[tokio::test]
async fn the_gateway_serves_on_one_thread_beside_its_config_watch() {
    let agent = QemuGa::start();
    let gateway = Gateway::start("livenessProbe:\n  guestAgentPing: {}\n", agent.socket());
    // Concurrent probes on their own connections are all served, by the one thread.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let url = gateway.url("/live");
        requests.spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    }
    let replies = requests.join_all().await;
    assert!(replies.iter().all(|s| matches!(s, Ok(200))), "{replies:?}");
    let mut names = thread_names(&gateway);
    names.sort();
    // The main thread keeps the binary's name (cut to 15 bytes); inotify's is notify's.
    assert_eq!(names, ["notify-rs inoti", "virt-probe-gate"], "{names:?}");
}
