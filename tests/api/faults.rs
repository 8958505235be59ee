//! Faults a real qemu-ga cannot be made to show on demand, with the scripted fake agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::eventually;
use crate::support::fake_agent::{Action, FakeAgent, SilentPeer, reply};
use crate::support::gateway::Gateway;

const EXEC_TRUE: &str = "readinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 1\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

fn status_reply(request: &Value, exit_code: i64) -> Action {
    reply(request, json!({"exited": true, "exitcode": exit_code}))
}

/// A reply with someone else's id, claiming success.
fn decoy(request: &Value, result: Value) -> Action {
    let id = request["id"].as_u64().unwrap_or(0).wrapping_sub(1);
    Action::Send(format!("{}\n", json!({"return": result, "id": id})).into_bytes())
}

#[tokio::test]
async fn stale_replies_are_never_taken_for_answers() {
    // What a previous client left on a virtio-serial stream: successful exit statuses and
    // a sync reply, with ids the gateway might plausibly use.
    let mut stale = Vec::new();
    for id in 0..64 {
        stale.extend_from_slice(
            format!("{{\"return\": {{\"exited\": true, \"exitcode\": 0}}, \"id\": {id}}}\n")
                .as_bytes(),
        );
    }
    stale.extend_from_slice(b"\xff{\"return\": 12345}\n{\"return\": {\"pid\": 1}}\n");
    // And before every real answer, a stale success with a neighbouring id.
    let agent = FakeAgent::start(
        stale,
        Arc::new(|request: &Value| match request["execute"].as_str() {
            Some("guest-exec") => vec![
                decoy(request, json!({"pid": 1})),
                reply(request, json!({"pid": 77})),
            ],
            Some("guest-exec-status") => vec![
                decoy(request, json!({"exited": true, "exitcode": 0})),
                status_reply(request, 1),
            ],
            _ => vec![reply(request, json!({}))],
        }),
    );
    let gateway = Gateway::start(EXEC_TRUE, agent.socket());
    for _ in 0..3 {
        let (status, report) = gateway.report("/ready").await;
        assert_eq!(status, 503, "{report}");
        assert_eq!(report["reason"], "exec: exit code 1");
    }
}

#[tokio::test]
async fn a_late_reply_after_a_timeout_is_dropped_and_the_next_probe_gets_its_own_answer() {
    let first = Arc::new(AtomicBool::new(true));
    let agent = FakeAgent::start(Vec::new(), {
        let first = Arc::clone(&first);
        Arc::new(move |request: &Value| {
            if request["execute"] == "guest-ping" && first.swap(false, Ordering::SeqCst) {
                // Answer so late that the gateway has given up; then an error reply with
                // the same id as a decoy.
                vec![
                    Action::Pause(Duration::from_millis(1500)),
                    reply(request, json!({})),
                ]
            } else if request["execute"] == "guest-ping" {
                vec![reply(request, json!({}))]
            } else {
                vec![Action::Nothing]
            }
        })
    });
    let gateway = Gateway::start(
        "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n",
        agent.socket(),
    );
    let started = Instant::now();
    let (status, report) = gateway.report("/live").await;
    assert_eq!(
        (status, report["result"].as_str()),
        (503, Some("timeout")),
        "{report}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    eventually(
        "liveness to pass after the resync",
        Duration::from_secs(5),
        || async { gateway.get("/live").await.status == 200 },
    )
    .await;
    // The late reply was not counted as the answer to a later ping: every success came
    // after a resync that followed it.
    let received = agent.received();
    let first_ping = received
        .iter()
        .position(|r| r["execute"] == "guest-ping")
        .unwrap();
    assert!(
        received[first_ping + 1..]
            .iter()
            .any(|r| r["execute"] == "guest-sync-delimited"),
        "no resync after the timeout: {received:?}"
    );
}

#[tokio::test]
async fn a_late_pid_reply_is_tracked_and_blocks_a_second_guest_process_until_it_exits() {
    let exited = Arc::new(AtomicBool::new(false));
    let next_pid = Arc::new(AtomicI64::new(4242));
    let agent = FakeAgent::start(Vec::new(), {
        let exited = Arc::clone(&exited);
        let next_pid = Arc::clone(&next_pid);
        Arc::new(move |request: &Value| match request["execute"].as_str() {
            Some("guest-exec") => {
                let pid = next_pid.fetch_add(1, Ordering::SeqCst);
                if pid == 4242 {
                    // The pid reply comes after the gateway's deadline.
                    vec![
                        Action::Pause(Duration::from_millis(1300)),
                        reply(request, json!({"pid": pid})),
                    ]
                } else {
                    vec![reply(request, json!({"pid": pid}))]
                }
            }
            Some("guest-exec-status") if request["arguments"]["pid"] == 4242 => {
                if exited.load(Ordering::SeqCst) {
                    vec![status_reply(request, 0)]
                } else {
                    vec![reply(request, json!({"exited": false}))]
                }
            }
            Some("guest-exec-status") => vec![status_reply(request, 0)],
            _ => vec![reply(request, json!({}))],
        })
    });
    let gateway = Gateway::start(EXEC_TRUE, agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(
        (status, report["result"].as_str()),
        (503, Some("timeout")),
        "{report}"
    );

    eventually(
        "the late pid to be tracked",
        Duration::from_secs(5),
        || async {
            let (_, report) = gateway.report("/ready").await;
            report["reason"] == "previous command still running (pid 4242)"
        },
    )
    .await;
    assert_eq!(agent.count("guest-exec"), 1, "a second guest-exec was sent");
    assert!(
        agent
            .received()
            .iter()
            .any(|r| r["execute"] == "guest-exec-status" && r["arguments"]["pid"] == 4242)
    );

    exited.store(true, Ordering::SeqCst);
    eventually(
        "readiness to pass once pid 4242 exits",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 200 },
    )
    .await;
    assert_eq!(agent.count("guest-exec"), 2);
}

#[tokio::test]
async fn garbage_from_the_agent_fails_the_probe_then_a_resync_recovers() {
    let garbage_sent = Arc::new(AtomicBool::new(false));
    let agent = FakeAgent::start(Vec::new(), {
        let garbage_sent = Arc::clone(&garbage_sent);
        Arc::new(move |request: &Value| {
            if !garbage_sent.swap(true, Ordering::SeqCst) {
                vec![Action::Send(
                    b"\x00\x01 this is not json {{{\n[1,2\n".to_vec(),
                )]
            } else {
                vec![reply(request, json!({}))]
            }
        })
    });
    let gateway = Gateway::start(
        "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n",
        agent.socket(),
    );
    let started = Instant::now();
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(started.elapsed() < Duration::from_millis(1500));
    eventually(
        "liveness to pass after garbage",
        Duration::from_secs(5),
        || async { gateway.get("/live").await.status == 200 },
    )
    .await;
}

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
async fn an_endless_line_drops_the_connection_and_the_gateway_keeps_serving() {
    let agent = FakeAgent::start(
        Vec::new(),
        Arc::new(|_: &Value| {
            let chunk = vec![b'x'; 1024 * 1024];
            (0..80).map(|_| Action::Send(chunk.clone())).collect()
        }),
    );
    let gateway = Gateway::start(
        "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 5\n",
        agent.socket(),
    );
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.contains("without ending") || reply.body.contains("timed out"),
        "{}",
        reply.body
    );
    assert_eq!(gateway.get("/healthz").await.status, 200);
    let peak = gateway.peak_rss_kib();
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
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
