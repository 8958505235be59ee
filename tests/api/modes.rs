//! Background mode (the gateway's own check loop with kubelet's thresholds) and
//! `minIntervalSeconds` (on-demand results reused), against a real qemu-ga.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::eventually;
use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;

fn background_config(file: &std::path::Path) -> String {
    format!(
        "mode: background\nreadinessProbe:\n  exec:\n    command: [cat, {}]\n  timeoutSeconds: 1\n  periodSeconds: 1\n  successThreshold: 1\n  failureThreshold: 2\nlivenessProbe:\n  guestAgentPing: {{}}\n  periodSeconds: 1\n",
        file.display()
    )
}

#[tokio::test]
async fn background_mode_follows_the_guest_file_with_kubelets_thresholds() {
    let agent = QemuGa::start();
    let marker = agent.dir().join("healthy");
    let gateway = Gateway::start(&background_config(&marker), agent.socket());

    eventually(
        "the loop's first failure",
        Duration::from_secs(5),
        || async {
            let reply = gateway.get("/ready").await;
            reply.status == 503 && reply.body.starts_with("exec: exit code 1")
        },
    )
    .await;
    let (_, report) = gateway.report("/ready").await;
    assert_eq!(report["mode"], "background", "{report}");
    assert_eq!(
        report["lastTransitionAt"],
        Value::Null,
        "readiness started failing"
    );

    std::fs::write(&marker, "ok").expect("touch");
    eventually("readiness passes", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 200
    })
    .await;
    let (_, report) = gateway.report("/ready").await;
    assert!(
        report["consecutiveSuccesses"].as_u64() >= Some(1),
        "{report}"
    );
    assert_ne!(report["lastTransitionAt"], Value::Null, "{report}");

    std::fs::remove_file(&marker).expect("rm");
    // One failure is not enough (failureThreshold 2): the first failing report passes.
    eventually(
        "a failure counted while still passing",
        Duration::from_secs(5),
        || async {
            let (status, report) = gateway.report("/ready").await;
            status == 200 && report["consecutiveFailures"] == 1
        },
    )
    .await;
    eventually(
        "readiness fails at the threshold",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 503 },
    )
    .await;
    let (_, report) = gateway.report("/ready").await;
    assert!(
        report["consecutiveFailures"].as_u64() >= Some(2),
        "{report}"
    );
    let text = gateway.get("/ready?verbose").await.body;
    assert!(text.contains("    mode: background\n"), "{text}");
    assert!(text.contains("    consecutiveFailures: "), "{text}");
}

#[tokio::test]
async fn background_mode_answers_from_the_state_without_running_checks_per_request() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(
        "mode: background\nlivenessProbe:\n  guestAgentPing: {}\n  periodSeconds: 5\n",
        agent.socket(),
    );
    let series = "probe_gateway_checks_total{probe=\"liveness\",check=\"liveness\",handler=\"guestAgentPing\",result=\"success\"}";
    eventually("the first check", Duration::from_secs(5), || async {
        gateway.metric(series).await >= 1.0
    })
    .await;
    let before = gateway.metric(series).await;
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(gateway.get("/live").await.status, 200);
    }
    let periods = (started.elapsed().as_secs_f64() / 5.0).ceil();
    let ran = gateway.metric(series).await - before;
    assert!(
        ran <= periods + 1.0,
        "100 requests ran {ran} checks in {periods} periods"
    );
}

#[tokio::test]
async fn min_interval_reuses_a_recent_result_instead_of_starting_a_guest_process() {
    let agent = QemuGa::start();
    let counter = agent.dir().join("runs");
    let config = format!(
        "minIntervalSeconds: 60\nreadinessProbe:\n  exec:\n    command: [sh, -c, 'echo run >> {}']\n  timeoutSeconds: 5\n",
        counter.display()
    );
    let gateway = Gateway::start(&config, agent.socket());
    let (status, first) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{first}");
    assert!(first.get("reusedAgeSeconds").is_none(), "{first}");
    for _ in 0..20 {
        let (status, report) = gateway.report("/ready").await;
        assert_eq!(status, 200);
        assert!(report["reusedAgeSeconds"].as_f64().is_some(), "{report}");
        assert_eq!(report["checkedAt"], first["checkedAt"]);
    }
    let runs = std::fs::read_to_string(&counter).expect("the command ran");
    assert_eq!(runs.lines().count(), 1, "{runs:?}");
    let text = gateway.get("/ready?verbose").await.body;
    assert!(text.contains("    reusedAgeSeconds: "), "{text}");
}
