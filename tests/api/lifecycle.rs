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

/// The gateway's HTTP worker threads (actix names them `actix-rt|system:0:N`).
fn http_worker_threads(gateway: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", gateway.pid()))
        .expect("the gateway's threads")
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.starts_with("actix-rt|system"))
        .count()
}

#[tokio::test]
async fn one_http_worker_by_default_and_as_many_as_http_workers_asks() {
    let agent = QemuGa::start();
    let config = "livenessProbe:\n  guestAgentPing: {}\n";
    let default = Gateway::start(config, agent.socket());
    assert_eq!(default.get("/live").await.status, 200);
    assert_eq!(http_worker_threads(&default), 1);
    drop(default);

    let socket = agent.socket().display().to_string();
    let three = Gateway::start_with(config, &["--agent", &socket, "--http-workers", "3"]);
    // Requests on several connections, so on several workers, all reach the one agent
    // client (it runs on the first worker).
    let replies = concurrent_lives(&three, 12).await;
    assert!(replies.iter().all(|&status| status == 200), "{replies:?}");
    eventually("three workers", Duration::from_secs(5), || async {
        http_worker_threads(&three) == 3
    })
    .await;
}

/// `count` concurrent `GET /live`, each on its own connection.
async fn concurrent_lives(gateway: &Gateway, count: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let url = gateway.url("/live");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            client
                .get(&url)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    statuses
}

#[test]
fn http_workers_out_of_range_is_a_usage_error_naming_the_flag() {
    let (code, _, stderr) = crate::support::gateway::run_cli(
        &[
            "serve",
            "--config",
            "/nonexistent.yaml",
            "--http-workers",
            "0",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--http-workers"), "{stderr}");
}
