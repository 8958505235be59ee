//! The startup probe against a real qemu-ga: run by the gateway until it first passes;
//! until then liveness passes and readiness fails, "starting", and no readiness or
//! liveness check runs; after `failureThreshold` failures both fail, "did not start";
//! `/started` tells kubelet; the liveness grace keeps an agent that never answered from
//! being counted; background loops wait for the start.

use std::time::Duration;

use crate::support::eventually;
use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;

/// Readiness counts its runs in `runs-ready` and passes; liveness pings; the startup probe
/// passes once `started` exists, checked every second, up to `failures` times.
fn config(agent: &QemuGa, failures: u32, extra: &str) -> String {
    let dir = agent.dir();
    format!(
        "{extra}checks:\n  app:\n    exec:\n      command: [sh, -c, 'echo run >> {runs_start}; test -e {started}']\n  counted:\n    exec:\n      command: [sh, -c, 'echo run >> {runs}']\nreadinessProbe:\n  checks: [counted]\n  periodSeconds: 1\nlivenessProbe:\n  guestAgentPing: {{}}\n  periodSeconds: 1\nstartupProbe:\n  checks: [app]\n  periodSeconds: 1\n  failureThreshold: {failures}\n",
        started = dir.join("started").display(),
        runs = dir.join("runs-ready").display(),
        runs_start = dir.join("runs-start").display(),
    )
}

fn readiness_runs(agent: &QemuGa) -> usize {
    runs(agent, "runs-ready")
}

fn runs(agent: &QemuGa, file: &str) -> usize {
    std::fs::read_to_string(agent.dir().join(file)).map_or(0, |t| t.lines().count())
}

#[tokio::test]
async fn until_started_liveness_passes_and_readiness_fails_with_starting_and_no_check_runs() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(&config(&agent, 60, ""), agent.socket());
    // The startup probe's first result: one failure counted.
    eventually("a startup failure", Duration::from_secs(5), || async {
        gateway.get("/started").await.body.contains("(failure 1 of")
    })
    .await;
    let live = gateway.get("/live").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 200);
    assert_eq!(report["state"], "starting");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("starting: app: exec: exit code 1 (failure "),
        "{report}"
    );
    assert_eq!(report["checks"], serde_json::json!([]));
    let ready = gateway.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.starts_with("starting: app: exec: exit code 1"),
        "{}",
        ready.body
    );
    assert_eq!(gateway.get("/ready/counted").await.status, 503);
    let (status, started) = gateway.report("/started").await;
    assert_eq!(status, 503);
    assert_eq!(started["probe"], "startup");
    assert_eq!(started["state"], "starting");
    assert_eq!(started["checks"][0]["name"], "app", "{started}");
    assert_eq!(
        readiness_runs(&agent),
        0,
        "no readiness check while starting"
    );

    std::fs::write(agent.dir().join("started"), "").unwrap();
    eventually("started", Duration::from_secs(5), || async {
        gateway.get("/started").await.status == 200
    })
    .await;
    let (_, started) = gateway.report("/started").await;
    assert!(started.get("state").is_none(), "{started}");
    assert_eq!(started["checks"][0]["status"], "success");
    assert_eq!(gateway.get("/ready").await.status, 200);
    assert_eq!(readiness_runs(&agent), 1, "the checks run once started");
    assert_eq!(
        gateway
            .metric("probe_gateway_startup_state{state=\"started\"}")
            .await,
        1.0
    );
    let events = gateway.logs();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "started: the startup probe passed"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn after_failure_threshold_failures_both_probes_fail_did_not_start_for_good() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(&config(&agent, 2, ""), agent.socket());
    eventually("did not start", Duration::from_secs(6), || async {
        gateway
            .get("/started")
            .await
            .body
            .starts_with("did not start")
    })
    .await;
    let expected =
        "did not start: the startup probe failed 2 times in a row: app: exec: exit code 1\n";
    for path in ["/started", "/live", "/ready"] {
        let reply = gateway.get(path).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, expected),
            "{path}"
        );
    }
    let (_, report) = gateway.report("/live").await;
    assert_eq!(report["state"], "didNotStart");
    // For good: the startup probe runs no more, and the file appearing now does not start
    // the VM. Nothing can be awaited for a check that must not run: two periods pass.
    assert_eq!(runs(&agent, "runs-start"), 2);
    std::fs::write(agent.dir().join("started"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        runs(&agent, "runs-start"),
        2,
        "no startup check after the verdict"
    );
    assert_eq!(gateway.get("/started").await.status, 503, "settled");
    assert_eq!(
        gateway
            .metric("probe_gateway_startup_state{state=\"did_not_start\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_agent_that_never_answered_is_not_counted_against_the_start_within_the_grace() {
    // No agent listens: every startup check fails to reach it.
    let agent = QemuGa::not_started();
    let graced = Gateway::start(
        &config(&agent, 1, "livenessGraceSeconds: 600\n"),
        agent.socket(),
    );
    let ungraced = Gateway::start(
        &config(&agent, 1, "livenessGraceSeconds: 0\n"),
        agent.socket(),
    );
    eventually(
        "the ungraced one did not start",
        Duration::from_secs(6),
        || async {
            ungraced
                .get("/started")
                .await
                .body
                .starts_with("did not start")
        },
    )
    .await;
    eventually(
        "the graced one's failures",
        Duration::from_secs(6),
        || async { gateway_reason(&graced).await.contains("not counted") },
    )
    .await;
    let reason = gateway_reason(&graced).await;
    assert!(
        reason.contains("(failure 0 of failureThreshold 1)"),
        "{reason}"
    );
    assert!(reason.contains("grace: "), "{reason}");
    assert_eq!(graced.get("/live").await.status, 200, "still starting");
}

async fn gateway_reason(gateway: &Gateway) -> String {
    gateway.get("/started").await.body
}

#[tokio::test]
async fn in_background_mode_the_loops_wait_for_the_start() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(&config(&agent, 60, "mode: background\n"), agent.socket());
    eventually("two startup failures", Duration::from_secs(5), || async {
        gateway.get("/started").await.body.contains("(failure 2 of")
    })
    .await;
    assert_eq!(readiness_runs(&agent), 0, "the readiness loop waits");
    let (_, report) = gateway.report("/ready").await;
    assert_eq!(report["state"], "starting");
    std::fs::write(agent.dir().join("started"), "").unwrap();
    eventually(
        "readiness passes from its loop",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 200 },
    )
    .await;
    assert!(readiness_runs(&agent) >= 1);
}

#[tokio::test]
async fn started_is_404_without_a_startup_probe() {
    let agent = QemuGa::start();
    let gateway = Gateway::start("livenessProbe:\n  guestAgentPing: {}\n", agent.socket());
    let reply = gateway.get("/started").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "startup probe is not configured\n");
    assert_eq!(
        gateway.get("/live").await.status,
        200,
        "nothing holds liveness"
    );
    assert_eq!(gateway.get("/started?exclude=x").await.status, 400);
}
