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
