//! The maintenance pause against a real qemu-ga: the pod's annotations come through a
//! downward-API-style volume (updated with kubelet's `..data` swap) and pause the probes of
//! a running gateway: liveness passes and readiness fails, "paused for maintenance", no
//! check runs, and it is logged and counted. KubeVirt's own pause annotation is honoured
//! for every check, exec included.

use std::time::Duration;

use crate::support::eventually;
use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;
use crate::support::volume::{AtomicVolume, downward_api_annotations};

const DOMAIN: (&str, &str) = ("kubevirt.io/domain", "vm-fedora");
const MAINTENANCE: &str = "probe-gateway.kubevirt.io/maintenance";
const KUBEVIRT_PAUSE: &str = "kubevirt.io/pause-guest-agent-probes";

/// Readiness runs `cat healthy` (counting its runs), liveness an exec that fails unless
/// `alive` exists; both on demand unless `extra` says otherwise.
fn config(agent: &QemuGa, extra: &str) -> String {
    let dir = agent.dir();
    format!(
        "{extra}readinessProbe:\n  exec:\n    command: [sh, -c, 'echo run >> {runs}; cat {healthy}']\n  periodSeconds: 1\nlivenessProbe:\n  exec:\n    command: [test, -e, {alive}]\n  periodSeconds: 1\n",
        runs = dir.join("runs").display(),
        healthy = dir.join("healthy").display(),
        alive = dir.join("alive").display(),
    )
}

fn runs(agent: &QemuGa) -> usize {
    std::fs::read_to_string(agent.dir().join("runs")).map_or(0, |t| t.lines().count())
}

fn start(agent: &QemuGa, volume: &AtomicVolume, extra: &str) -> Gateway {
    let annotations = volume.path().display().to_string();
    Gateway::start_with(
        &config(agent, extra),
        &[
            "--agent",
            &agent.socket().display().to_string(),
            "--pod-annotations",
            &annotations,
        ],
    )
}

#[tokio::test]
async fn the_maintenance_annotation_pauses_a_running_gateway_and_its_removal_resumes_it() {
    let agent = QemuGa::start();
    std::fs::write(agent.dir().join("healthy"), "ok").unwrap();
    std::fs::write(agent.dir().join("alive"), "").unwrap();
    let mut volume = AtomicVolume::new("annotations", &downward_api_annotations(&[DOMAIN]));
    let gateway = start(&agent, &volume, "");
    assert_eq!(gateway.get("/ready").await.status, 200);
    assert_eq!(runs(&agent), 1);

    volume.update(&downward_api_annotations(&[
        DOMAIN,
        (MAINTENANCE, "Windows updates, CHG-1234"),
    ]));
    eventually("the pause", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 503
    })
    .await;
    let before = runs(&agent);
    let reason = "paused for maintenance (Windows updates, CHG-1234)";
    let ready = gateway.get("/ready").await;
    assert_eq!((ready.status, ready.body.trim_end()), (503, reason));
    let (status, live) = gateway.report("/live").await;
    assert_eq!(status, 200);
    assert_eq!(live["state"], "paused");
    assert_eq!(live["reason"], reason);
    // Liveness would fail if its check ran: the guest's `alive` is gone.
    std::fs::remove_file(agent.dir().join("alive")).unwrap();
    assert_eq!(gateway.get("/live").await.status, 200);
    assert_eq!(gateway.get("/live/liveness").await.status, 200);
    assert_eq!(runs(&agent), before, "no check runs while paused");
    assert_eq!(gateway.metric("probe_gateway_probes_paused").await, 1.0);
    assert!(
        gateway
            .metric("probe_gateway_paused_answers_total{probe=\"liveness\"}")
            .await
            >= 3.0
    );
    let events = gateway.logs();
    let paused = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("probes paused for maintenance"))
        })
        .unwrap_or_else(|| panic!("no pause event in {events:#?}"));
    assert_eq!(paused["annotation"], MAINTENANCE);
    assert_eq!(paused["note"], "Windows updates, CHG-1234");

    volume.update(&downward_api_annotations(&[DOMAIN]));
    eventually("the pause is over", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 200
    })
    .await;
    assert_eq!(
        gateway.get("/live").await.status,
        503,
        "its check runs again"
    );
    assert_eq!(gateway.metric("probe_gateway_probes_paused").await, 0.0);
}

#[tokio::test]
async fn kubevirts_pause_annotation_pauses_exec_checks_too_read_as_kubevirt_reads_it() {
    let agent = QemuGa::start();
    // Liveness fails if its check runs.
    let mut volume = AtomicVolume::new(
        "annotations",
        &downward_api_annotations(&[DOMAIN, (KUBEVIRT_PAUSE, "true")]),
    );
    let gateway = start(&agent, &volume, "");
    let live = gateway.get("/live").await;
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, "ok\n"),
        "paused from the first answer"
    );
    let (_, report) = gateway.report("/live").await;
    assert_eq!(
        report["reason"],
        "paused for maintenance (kubevirt.io/pause-guest-agent-probes)"
    );
    // "yes" is not a Go boolean: KubeVirt does not pause on it, nor does the gateway.
    volume.update(&downward_api_annotations(&[
        DOMAIN,
        (KUBEVIRT_PAUSE, "yes"),
    ]));
    eventually("not paused", Duration::from_secs(5), || async {
        gateway.get("/live").await.status == 503
    })
    .await;
}

#[tokio::test]
async fn in_background_mode_the_loops_hold_while_paused() {
    let agent = QemuGa::start();
    std::fs::write(agent.dir().join("healthy"), "ok").unwrap();
    std::fs::write(agent.dir().join("alive"), "").unwrap();
    let mut volume = AtomicVolume::new("annotations", &downward_api_annotations(&[DOMAIN]));
    let gateway = start(&agent, &volume, "mode: background\n");
    eventually("readiness passes", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 200
    })
    .await;
    volume.update(&downward_api_annotations(&[DOMAIN, (MAINTENANCE, "true")]));
    eventually("the pause", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 503
    })
    .await;
    let before = runs(&agent);
    // A loop that must not run has nothing to await: three periods pass.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        runs(&agent) <= before + 1,
        "at most the check in flight finished"
    );
    volume.update(&downward_api_annotations(&[DOMAIN]));
    eventually("the loop runs again", Duration::from_secs(5), || async {
        runs(&agent) > before + 1 && gateway.get("/ready").await.status == 200
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_annotations_file_keeps_the_pause_as_it_was() {
    let agent = QemuGa::start();
    let mut volume = AtomicVolume::new(
        "annotations",
        &downward_api_annotations(&[(MAINTENANCE, "updates")]),
    );
    let gateway = start(&agent, &volume, "");
    assert_eq!(gateway.get("/live").await.status, 200, "paused");
    volume.update("probe-gateway.kubevirt.io/maintenance=unquoted\n");
    eventually("the error is logged", Duration::from_secs(5), || async {
        gateway.logs().iter().any(|e| {
            e["message"] == "cannot read the pod's annotations; the pause stays as it was"
                && e["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("line 1"))
        })
    })
    .await;
    assert_eq!(gateway.get("/live").await.status, 200, "still paused");
}
