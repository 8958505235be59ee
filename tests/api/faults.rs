//! Faults a real qemu-ga cannot be made to show on demand, with the scripted fake agent,
//! seen from HTTP: what kubelet gets, and when. The link's own handling of stale, late and
//! garbled replies is specified by the unit tests of `src/agent/link/` and
//! `src/agent/processes/`, against an in-memory peer with a paused clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake_agent::{FakeAgent, SilentPeer, reply};
use crate::support::gateway::Gateway;

const EXEC_TRUE: &str = "readinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 1\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

#[tokio::test]
async fn a_silent_agent_fails_probes_within_the_timeout_and_healthz_still_answers() {
    let silent = SilentPeer::start();
    let config = "livenessGraceSeconds: 0\nreadinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 2\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";
    let gateway = Gateway::start(config, silent.socket());
    for (path, timeout) in [("/live", 1.0), ("/ready", 2.0)] {
        let started = Instant::now();
        let (status, report) = gateway.report(path).await;
        let took = started.elapsed().as_secs_f64();
        assert_eq!(
            (status, report["result"].as_str()),
            (503, Some("timeout")),
            "{report}"
        );
        assert!(took < timeout + 0.5, "{path} took {took}s");
        assert!(
            report["reason"]
                .as_str()
                .unwrap()
                .contains("the agent did not answer"),
            "{report}"
        );
    }
    assert_eq!(gateway.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn liveness_passes_under_the_grace_while_a_connected_agent_stays_silent() {
    let silent = SilentPeer::start();
    let gateway = Gateway::start("livenessProbe:\n  guestAgentPing: {}\n", silent.socket());
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent not reached yet")
    );
}

#[tokio::test]
async fn output_that_is_not_base64_neither_crashes_nor_wedges_the_probe() {
    let agent = FakeAgent::start(
        Vec::new(),
        Arc::new(|request: &Value| match request["execute"].as_str() {
            Some("guest-exec") => vec![reply(request, json!({"pid": 9}))],
            Some("guest-exec-status") => vec![reply(
                request,
                json!({"exited": true, "exitcode": 0, "out-data": "aaaé", "err-data": "\u{0}é"}),
            )],
            _ => vec![reply(request, json!({}))],
        }),
    );
    let gateway = Gateway::start(&format!("exposeOutput: true\n{EXEC_TRUE}"), agent.socket());
    for _ in 0..3 {
        let (status, report) = gateway.report("/ready").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["stdout"], "");
    }
}

/// A unix socket whose peer answers every line with `answer(line)`: not an agent.
fn impostor(
    answer: fn(&[u8]) -> Vec<u8>,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("impostor.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(read);
                let mut line = Vec::new();
                while lines
                    .read_until(b'\n', &mut line)
                    .await
                    .is_ok_and(|n| n > 0)
                {
                    if write.write_all(&answer(&line)).await.is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (dir, socket, task)
}

#[tokio::test]
async fn peers_that_are_not_agents_fail_probes_in_bounded_time_and_the_gateway_keeps_serving() {
    let garbage: fn(&[u8]) -> Vec<u8> = |_| b"220 smtp.example ESMTP ready\r\n".to_vec();
    // Answers syncs, but always with an id of its own.
    let wrong_sync: fn(&[u8]) -> Vec<u8> = |line| {
        if line.windows(20).any(|w| w == b"guest-sync-delimited") {
            b"\xff{\"return\": 1}\n".to_vec()
        } else {
            b"{\"return\": {}}\n".to_vec()
        }
    };
    for (name, answer) in [("garbage", garbage), ("wrong sync id", wrong_sync)] {
        let (_dir, socket, task) = impostor(answer);
        let gateway = Gateway::start(
            "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n",
            &socket,
        );
        for _ in 0..3 {
            let started = Instant::now();
            let (status, report) = gateway.report("/live").await;
            assert_eq!(
                (status, report["result"].as_str()),
                (503, Some("timeout")),
                "{name}: {report}"
            );
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{name}: {:?}",
                started.elapsed()
            );
            let reason = report["reason"].as_str().unwrap();
            assert!(
                reason.contains("the agent did not answer"),
                "{name}: {reason}"
            );
        }
        assert_eq!(gateway.get("/healthz").await.status, 200, "{name}");
        task.abort();
    }
}
