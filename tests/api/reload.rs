//! Config reload: a ConfigMap-style update (atomic symlink swap of the directory's
//! `..data`), SIGHUP, invalid configs rejected with the old one kept, no request dropped.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::eventually;
use crate::support::gateway::{Gateway, run_cli};
use crate::support::qga::QemuGa;
use crate::support::volume::AtomicVolume;

/// A ConfigMap volume holding `gateway.yaml`.
struct ConfigMapVolume(AtomicVolume);

impl ConfigMapVolume {
    fn new(config: &str) -> ConfigMapVolume {
        ConfigMapVolume(AtomicVolume::new("gateway.yaml", config))
    }

    fn path(&self) -> PathBuf {
        self.0.path()
    }

    fn update(&mut self, config: &str) {
        self.0.update(config);
    }
}

fn exec(command: &str) -> String {
    format!("readinessProbe:\n  exec:\n    command: [{command}]\n  timeoutSeconds: 2\n")
}

/// A gateway serving the config of a ConfigMap volume, against its own real qemu-ga.
struct Reloadable {
    volume: ConfigMapVolume,
    gateway: Gateway,
    _agent: QemuGa,
}

impl Reloadable {
    fn start(config: &str) -> Reloadable {
        let agent = QemuGa::start();
        let volume = ConfigMapVolume::new(config);
        let socket = agent.socket().display().to_string();
        let gateway = Gateway::start_file(&volume.path(), &["--agent", &socket]);
        Reloadable {
            volume,
            gateway,
            _agent: agent,
        }
    }
}

#[tokio::test]
async fn a_configmap_update_is_picked_up_without_a_restart() {
    let Reloadable {
        mut volume,
        gateway,
        _agent,
    } = Reloadable::start(&exec("\"false\""));
    assert_eq!(gateway.get("/ready").await.status, 503);
    let pid = gateway.pid();

    volume.update(&exec("\"true\""));
    eventually(
        "the new config is in force",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 200 },
    )
    .await;
    assert_eq!(gateway.pid(), pid);
    assert_eq!(gateway.config_reloads("applied").await, 1.0);
    assert!(
        gateway
            .logs()
            .iter()
            .any(|e| e["message"] == "config reloaded" && e["outcome"] == "applied"),
        "{:#?}",
        gateway.logs()
    );
}

#[tokio::test]
async fn an_invalid_config_is_rejected_with_validates_errors_and_the_old_one_stays() {
    let Reloadable {
        mut volume,
        gateway,
        _agent,
    } = Reloadable::start(&exec("\"true\""));
    assert_eq!(gateway.get("/ready").await.status, 200);

    let bad = "readinessProbe:\n  exec:\n    command: []\n  timeoutSeconds: 0\n";
    volume.update(bad);
    gateway.await_config_reloads("rejected", 1.0).await;
    assert_eq!(
        gateway.get("/ready").await.status,
        200,
        "the old config stays"
    );

    // The log carries what validate prints for the same file.
    let scratch = tempfile::tempdir().expect("temp dir");
    let file = scratch.path().join("bad.yaml");
    std::fs::write(&file, bad).expect("write");
    let (_, _, stderr) = run_cli(&["validate", "--config", &file.display().to_string()], &[]);
    let problems: Vec<String> = stderr
        .lines()
        .map(|line| {
            line.rsplit_once(".yaml: ")
                .map_or(line, |(_, rest)| rest)
                .to_string()
        })
        .collect();
    assert_eq!(problems.len(), 2, "{stderr}");
    let logged = || -> Vec<String> {
        gateway
            .logs()
            .iter()
            .filter(|e| e["message"] == "config reload rejected; the config in force stays")
            .map(|e| e["error"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    eventually(
        "every problem in the log",
        Duration::from_secs(5),
        || async {
            problems
                .iter()
                .all(|problem| logged().iter().any(|line| line.ends_with(problem.as_str())))
        },
    )
    .await;

    volume.update(&exec("\"false\""));
    eventually(
        "a good config after a bad one",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 503 },
    )
    .await;
}

#[tokio::test]
async fn sighup_rereads_the_file() {
    let Reloadable {
        volume: _volume,
        gateway,
        _agent,
    } = Reloadable::start(&exec("\"true\""));
    assert_eq!(gateway.get("/healthz").await.status, 200);
    gateway.signal(Signal::SIGHUP);
    gateway.await_config_reloads("unchanged", 1.0).await;
    assert_eq!(gateway.get("/ready").await.status, 200);
}

#[tokio::test]
async fn a_listen_change_is_logged_as_needing_a_restart() {
    let agent = QemuGa::start();
    let mut volume =
        ConfigMapVolume::new(&format!("listen: \"127.0.0.1:0\"\n{}", exec("\"true\"")));
    let gateway = Gateway::start_file_listening_as_configured(
        &volume.path(),
        &["--agent", &agent.socket().display().to_string()],
    );
    volume.update(&format!("listen: \"127.0.0.1:1\"\n{}", exec("\"true\"")));
    eventually("the listen warning", Duration::from_secs(5), || async {
        gateway.logs().iter().any(|e| {
            e["message"] == "listen changed in the config: it takes effect at the next restart"
        })
    })
    .await;
    assert_eq!(
        gateway.get("/ready").await.status,
        200,
        "still serving where it was"
    );
    assert_eq!(
        (
            gateway.config_reloads("unchanged").await,
            gateway.config_reloads("applied").await
        ),
        (1.0, 0.0),
        "a listen change alone leaves the checks as they are"
    );
}

#[tokio::test]
async fn requests_during_reloads_are_all_answered() {
    let Reloadable {
        mut volume,
        gateway,
        _agent,
    } = Reloadable::start(&exec("\"true\""));
    let url = gateway.url("/ready");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let mut statuses = Vec::new();
        for _ in 0..300 {
            let status = client.get(&url).send().await.map(|r| r.status().as_u16());
            statuses.push(status.map_err(|e| e.to_string()));
        }
        statuses
    });
    for i in 0..6 {
        let command = if i % 2 == 0 { "\"false\"" } else { "\"true\"" };
        volume.update(&exec(command));
        let applied = f64::from(i + 1);
        eventually("the reload", Duration::from_secs(5), || async {
            gateway.config_reloads("applied").await >= applied
        })
        .await;
    }
    let statuses = load.await.expect("load task");
    let failed: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(s, Ok(200 | 503)))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

/// A background readiness probe of `true` every second, passing after `success` results,
/// with `settings` (gateway fields, one per line).
fn background(success: u32, settings: &str) -> String {
    format!(
        "mode: background\n{settings}readinessProbe:\n  exec:\n    \
         command: [\"true\"]\n  periodSeconds: 1\n  successThreshold: {success}\n"
    )
}

async fn consecutive_successes(gateway: &Gateway) -> (u16, u64) {
    let (status, report) = gateway.report("/ready").await;
    (status, report["consecutiveSuccesses"].as_u64().unwrap_or(0))
}

#[tokio::test]
async fn a_reload_keeps_the_state_of_a_background_check_it_does_not_change() {
    let Reloadable {
        mut volume,
        gateway,
        _agent,
    } = Reloadable::start(&background(3, ""));
    eventually("readiness passes", Duration::from_secs(10), || async {
        consecutive_successes(&gateway).await.0 == 200
    })
    .await;

    let changes = [
        // Another exposeOutput: the same check, the same loop.
        background(3, "exposeOutput: true\n"),
        // Another threshold: a new loop that resumes the state and the counts (a reset
        // would fail readiness, kubelet's initial state, for four periods).
        background(4, "exposeOutput: true\n"),
        // Another output excerpt size: a new agent client on the same address, and
        // still the same state.
        background(4, "exposeOutput: true\noutputExcerptBytes: 2048\n"),
    ];
    let mut before = 3;
    for (applied, config) in (1..).zip(changes) {
        volume.update(&config);
        gateway
            .await_config_reloads("applied", f64::from(applied))
            .await;
        let (status, successes) = consecutive_successes(&gateway).await;
        assert_eq!(
            status, 200,
            "reload {applied}: readiness is not reset to failing"
        );
        assert!(
            successes >= before,
            "reload {applied}: the count goes on: {successes} < {before}"
        );
        before = successes;
    }
}

#[tokio::test]
async fn a_reload_to_the_vmis_vsock_outside_hook_mode_is_rejected_naming_why() {
    let agent = QemuGa::start();
    let in_file = |agent: &str| format!("agent: \"{agent}\"\n{}", exec("\"true\""));
    let mut volume = ConfigMapVolume::new(&in_file(&agent.socket().display().to_string()));
    let gateway = Gateway::start_file(&volume.path(), &[]);
    assert_eq!(gateway.get("/ready").await.status, 200);
    volume.update(&in_file("vsock://vmi:1234"));
    gateway.await_config_reloads("rejected", 1.0).await;
    eventually("the reason in the log", Duration::from_secs(5), || async {
        gateway.logs().iter().any(|e| {
            e["error"].as_str().is_some_and(|error| {
                error.contains("vsock://vmi:PORT") && error.contains("needs --kubevirt-hook")
            })
        })
    })
    .await;
    assert_eq!(
        gateway.get("/ready").await.status,
        200,
        "the old config stays"
    );
}
