//! Reaching the agent over each transport: unix (everywhere else), hybrid vsock, vsock.

use std::time::{Duration, Instant};

use crate::support::gateway::Gateway;
use crate::support::hybrid_vsock::HybridVsock;
use crate::support::qga::QemuGa;

const PING_BOTH: &str = "livenessGraceSeconds: 0\nreadinessProbe:\n  exec:\n    command: [\"true\"]\nlivenessProbe:\n  guestAgentPing: {}\n";

// Multi-threaded: the relay must keep running while the test blocks on the gateway's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_vsock_reaches_a_real_agent_after_the_handshake() {
    let mut agent = QemuGa::start();
    let vsock = HybridVsock::start(1024, agent.socket());
    let uri = format!("hybrid-vsock://{}?port=1024", vsock.socket().display());
    let mut gateway = Gateway::start_with(PING_BOTH, &["--agent", &uri]);
    assert_eq!(gateway.get("/live").await.status, 200);
    assert_eq!(gateway.get("/ready").await.status, 200);
    gateway.stop();
    assert!(
        agent.is_running(),
        "the agent did not survive a close through the relay"
    );
    assert!(agent.answers_ping());
}

#[tokio::test]
async fn a_refused_hybrid_vsock_handshake_is_a_clear_reason() {
    let agent = QemuGa::start();
    let vsock = HybridVsock::start(1024, agent.socket());
    let uri = format!("hybrid-vsock://{}?port=9999", vsock.socket().display());
    let gateway = Gateway::start_with(PING_BOTH, &["--agent", &uri]);
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 503, "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("hybrid vsock handshake for port 9999 refused"),
        "{reason}"
    );
    assert!(reason.contains("ERR no listener"), "{reason}");
}

#[tokio::test]
async fn an_unreachable_vsock_peer_fails_in_bounded_time_naming_the_address() {
    // CID 1 (local) with no listener: refused where vsock loopback exists, and no answer
    // at all on machines like this one without it. Either way: a bounded 503.
    let gateway = Gateway::start_with(PING_BOTH, &["--agent", "vsock://1:49999"]);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, report) = gateway.report("/live").await;
        assert_eq!(status, 503, "{report}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
        let reason = report["reason"].as_str().unwrap();
        assert!(reason.contains("vsock://1:49999"), "{reason}");
    }
    assert_eq!(gateway.get("/healthz").await.status, 200);
}

#[tokio::test]
#[ignore = "needs vsock loopback (the vsock_loopback module)"]
async fn vsock_reaches_a_real_qemu_ga_listening_on_vsock() {
    let port = 40000 + std::process::id() % 20000;
    let dir = tempfile::tempdir().unwrap();
    let agent = std::process::Command::new(crate::support::qga::qemu_ga_binary())
        .args(["-m", "vsock-listen", "-p", &format!("4294967295:{port}")])
        .arg("-t")
        .arg(dir.path())
        .arg("-f")
        .arg(dir.path().join("qga.pid"))
        .spawn()
        .expect("start qemu-ga on vsock");
    let _agent = KillOnDrop(agent);
    let uri = format!("vsock://1:{port}");
    let gateway = Gateway::start_with(PING_BOTH, &["--agent", &uri]);
    crate::support::eventually("liveness over vsock", Duration::from_secs(10), || async {
        gateway.get("/live").await.status == 200
    })
    .await;
    assert_eq!(gateway.get("/ready").await.status, 200);
}

/// Kills and reaps a child process when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
