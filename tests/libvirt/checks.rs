//! Named checks, the startup probe and the maintenance pause end to end, through the
//! libvirt backend and the real guest: the README's walkthrough. Three named checks (the
//! agent, an app that comes up late, a disk), a startup probe on the app, and a pause that
//! reaches the running gateway through a downward-API-style volume (kubelet's `..data`
//! swap), during which the domain is even suspended.

use std::time::Duration;

use crate::gateway::{LibvirtGateway, config, reason};
use crate::session::session_with_domain;
use crate::volume::{AtomicVolume, downward_api_annotations};

const SECOND: Duration = Duration::from_secs(1);

const CHECKS: &str = "checks:\n  agent:\n    guestAgentPing: {}\n    timeoutSeconds: 2\n  app:\n    exec:\n      command: [test, -e, /tmp/app-up]\n    timeoutSeconds: 2\n  disk:\n    exec:\n      command: [test, -w, /tmp]\n    timeoutSeconds: 2\nreadinessProbe:\n  checks: [agent, app, disk]\nlivenessProbe:\n  checks: [agent]\nstartupProbe:\n  checks: [app]\n  periodSeconds: 1\n  failureThreshold: 600\n";

fn names(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn three_named_checks_a_startup_probe_and_a_maintenance_pause_through_libvirt() {
    let test = "three_named_checks_a_startup_probe_and_a_maintenance_pause_through_libvirt";
    let Some((libvirt, mut domain)) = session_with_domain(test, "checks").await else {
        return;
    };
    let domain_label = ("kubevirt.io/domain", domain.name.as_str());
    let mut annotations = AtomicVolume::new_at(
        &libvirt.dir().join("podinfo"),
        "annotations",
        &downward_api_annotations(&[domain_label]),
    );
    let annotations_path = annotations.path().display().to_string();
    let gateway = LibvirtGateway::start(
        &libvirt,
        &config(&libvirt, &domain.name, CHECKS),
        &["--pod-annotations", &annotations_path],
    );

    // Starting: the app is not up; liveness passes and readiness fails, and says why.
    let started = gateway
        .await_report("/started", 10 * SECOND, |_, report| {
            reason(report).starts_with("starting: app:")
        })
        .await;
    assert_eq!(started["state"], "starting", "{started}");
    assert_eq!(started["checks"][0]["name"], "app", "{started}");
    let (status, live, _) = gateway.report("/live").await;
    assert_eq!(
        (status, live["state"].as_str()),
        (200, Some("starting")),
        "{live}"
    );
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        reason(&ready).starts_with("starting: app: exec: exit code 1"),
        "{ready}"
    );

    // The app comes up in the guest: started, and readiness runs its three checks.
    domain.control.sh("touch /tmp/app-up").await;
    gateway.await_status("/started", 200, 10 * SECOND).await;
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{ready}");
    let all_pass: Vec<(String, String)> = ["agent", "app", "disk"]
        .iter()
        .map(|name| (name.to_string(), "success".to_string()))
        .collect();
    assert_eq!(names(&ready), all_pass);
    let (status, app, _) = gateway.report("/ready/app").await;
    assert_eq!((status, app["exitCode"].as_i64()), (200, Some(0)), "{app}");

    // The app goes down: readiness names it, and can be asked without it.
    domain.control.sh("rm /tmp/app-up").await;
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(
        (status, reason(&ready)),
        (503, "app: exec: exit code 1"),
        "{ready}"
    );
    let (status, _, _) = gateway.report("/ready?exclude=app").await;
    assert_eq!(status, 200);

    domain.control.sh("touch /tmp/app-up").await;
    gateway.await_status("/ready", 200, 10 * SECOND).await;

    // Maintenance: the annotation arrives through the volume; liveness passes and
    // readiness fails while the domain is suspended (the guest away for updates).
    annotations.update(&downward_api_annotations(&[
        domain_label,
        ("probe-gateway.kubevirt.io/maintenance", "Windows updates"),
    ]));
    let ready = gateway.await_status("/ready", 503, 10 * SECOND).await;
    let paused = "paused for maintenance (Windows updates)";
    assert_eq!(
        (reason(&ready), &ready["state"]),
        (paused, &serde_json::json!("paused"))
    );
    libvirt.virsh_ok(&["suspend", &domain.name]);
    for path in ["/live", "/live/agent"] {
        let (status, live, took) = gateway.report(path).await;
        assert_eq!((status, reason(&live)), (200, paused), "{path}: {live}");
        assert!(took < SECOND, "no check runs: {took:?}");
    }
    libvirt.virsh_ok(&["resume", &domain.name]);

    // The annotation goes: the checks answer again.
    annotations.update(&downward_api_annotations(&[domain_label]));
    let ready = gateway.await_status("/ready", 200, 10 * SECOND).await;
    assert_eq!(names(&ready), all_pass);
    assert_eq!(gateway.metric("probe_gateway_probes_paused").await, 0.0);
    assert!(
        gateway
            .metric("probe_gateway_paused_answers_total{probe=\"liveness\"}")
            .await
            >= 2.0
    );
}
