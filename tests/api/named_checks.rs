//! Named checks against a real qemu-ga: a probe made of several checks, all of which must
//! pass; one check by name (`/ready/<name>`); `?exclude=`; the kube-apiserver-style
//! verbose list; one JSON entry per check; checks run together within the longest
//! timeout; a check two probes list runs once for both; metrics by check.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::gateway::Gateway;
use crate::support::hybrid_vsock::HybridVsock;
use crate::support::qga::QemuGa;

/// Files in the agent's directory that the checks look at and count runs in.
struct Guest {
    dir: PathBuf,
}

impl Guest {
    fn of(agent: &QemuGa) -> Guest {
        Guest {
            dir: agent.dir().to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.path(name), "ok").expect("touch");
    }

    /// How many times the check that appends to `runs-NAME` has run.
    fn runs(&self, name: &str) -> usize {
        std::fs::read_to_string(self.path(&format!("runs-{name}")))
            .map_or(0, |text| text.lines().count())
    }

    /// A command that counts its runs and passes while `file` exists.
    fn counted_test(&self, name: &str, file: &str) -> String {
        format!(
            "[sh, -c, 'echo run >> {}; test -e {}']",
            self.path(&format!("runs-{name}")).display(),
            self.path(file).display()
        )
    }
}

/// Three named checks: the agent, an app (passes once `app-up` exists), a disk (passes
/// while `disk-ok` exists); readiness lists all three, liveness the agent.
fn three_checks(guest: &Guest) -> String {
    format!(
        "checks:\n  agent:\n    guestAgentPing: {{}}\n  app:\n    exec:\n      command: {}\n    timeoutSeconds: 3\n  disk:\n    exec:\n      command: {}\nreadinessProbe:\n  checks: [agent, app, disk]\nlivenessProbe:\n  checks: [agent]\n",
        guest.counted_test("app", "app-up"),
        guest.counted_test("disk", "disk-ok"),
    )
}

fn names(report: &Value) -> Vec<&str> {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {report}"))
        .iter()
        .map(|check| check["name"].as_str().unwrap())
        .collect()
}

fn status_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"));
    &check["status"]
}

#[tokio::test]
async fn a_probe_passes_only_when_every_named_check_does_and_names_the_failing_ones() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    guest.touch("disk-ok");
    let gateway = Gateway::start(&three_checks(&guest), agent.socket());

    let reply = gateway.get("/ready").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "app: exec: exit code 1\n");
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(names(&report), ["agent", "app", "disk"]);
    assert_eq!(status_of(&report, "agent"), "success");
    assert_eq!(status_of(&report, "app"), "failure");
    assert_eq!(status_of(&report, "disk"), "success");
    assert_eq!(report["reason"], "app: exec: exit code 1");
    assert!(report.get("handler").is_none(), "{report}");

    std::fs::remove_file(guest.path("disk-ok")).unwrap();
    let reply = gateway.get("/ready").await;
    assert_eq!(
        reply.body,
        "app: exec: exit code 1; disk: exec: exit code 1\n"
    );

    guest.touch("app-up");
    guest.touch("disk-ok");
    let reply = gateway.get("/ready").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    // Liveness lists the agent only.
    let (status, report) = gateway.report("/live").await;
    assert_eq!((status, names(&report)), (200, vec!["agent"]));
}

#[tokio::test]
async fn one_check_runs_by_name_and_an_unknown_name_is_404_naming_the_probes_checks() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    guest.touch("disk-ok");
    let gateway = Gateway::start(&three_checks(&guest), agent.socket());

    let reply = gateway.get("/ready/app").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "app: exec: exit code 1\n")
    );
    let reply = gateway.get("/ready/disk").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert_eq!(
        (guest.runs("app"), guest.runs("disk")),
        (1, 1),
        "each ran alone"
    );
    let (_, report) = gateway.report("/ready/app").await;
    assert_eq!(names(&report), ["app"]);
    assert_eq!(
        report["handler"], "exec",
        "one check: its details at the top"
    );
    assert_eq!(report["exitCode"], 1);
    assert_eq!(guest.runs("disk"), 1);

    let reply = gateway.get("/ready/nope").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.body,
        "the readiness probe has no check named \"nope\" (its checks: agent, app, disk)\n"
    );
    // A check of another probe is not this probe's.
    let reply = gateway.get("/live/app").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("(its checks: agent)"), "{}", reply.body);
    assert_eq!(guest.runs("app"), 2, "a refused request runs nothing");
    assert_eq!(gateway.get("/live/agent").await.status, 200);
    assert_eq!(gateway.get("/ready/app?exclude=app").await.status, 400);
}

#[tokio::test]
async fn exclude_leaves_checks_out_and_an_unknown_name_is_400() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    let gateway = Gateway::start(&three_checks(&guest), agent.socket());

    let reply = gateway.get("/ready?exclude=app&exclude=disk").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert_eq!(
        (guest.runs("app"), guest.runs("disk")),
        (0, 0),
        "excluded: not run"
    );
    let (status, report) = gateway.report("/ready?exclude=app").await;
    assert_eq!(status, 503, "disk still fails");
    assert_eq!(names(&report), ["agent", "disk"]);
    assert_eq!(report["reason"], "disk: exec: exit code 1");

    let reply = gateway.get("/ready?exclude=app&exclude=nope").await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        "bad request: query parameter exclude: the readiness probe has no check named \"nope\" (its checks: agent, app, disk)\n"
    );
    let reply = gateway.get("/ready?exclude=").await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("exclude=NAME"), "{}", reply.body);
    assert_eq!(guest.runs("disk"), 1, "refused requests run nothing");
}

#[tokio::test]
async fn verbose_lists_each_check_as_kube_apiserver_does() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    guest.touch("disk-ok");
    let gateway = Gateway::start(&three_checks(&guest), agent.socket());
    let reply = gateway.get("/ready?verbose").await;
    assert_eq!(reply.status, 503);
    let marks: Vec<&str> = reply
        .body
        .lines()
        .filter(|line| line.starts_with('['))
        .collect();
    assert_eq!(
        marks,
        [
            "[+]agent ok",
            "[-]app failed: exec: exit code 1",
            "[+]disk ok"
        ]
    );
    assert!(reply.body.contains("    handler: exec\n"), "{}", reply.body);
    assert!(reply.body.contains("    exitCode: 1\n"), "{}", reply.body);
    assert_eq!(reply.body.lines().last(), Some("readiness check failed"));
}

#[tokio::test]
async fn the_checks_of_a_probe_run_together_within_the_longest_timeout() {
    let agent = QemuGa::start();
    // Three checks of 2 s each with a 3 s timeout: one after another they would take 6 s,
    // past the promised bound (the longest timeout + 0.5 s).
    let gateway = Gateway::start(
        "checks:\n  a: {exec: {command: [sleep, '2']}, timeoutSeconds: 3}\n  b: {exec: {command: [sleep, '2']}, timeoutSeconds: 3}\n  c: {exec: {command: [sleep, '2']}, timeoutSeconds: 3}\n  hang: {exec: {command: [sleep, '60']}, timeoutSeconds: 1}\nreadinessProbe:\n  checks: [a, b, c]\nlivenessProbe:\n  checks: [hang, a]\n",
        agent.socket(),
    );
    let started = Instant::now();
    let (status, report) = gateway.report("/ready").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{report}");
    assert!(took < Duration::from_millis(3500), "took {took:?}");

    // A hanging check is cut at its own timeout, the others run theirs out.
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 503);
    assert_eq!(report["reason"], "hang: timed out after 1s");
    assert_eq!(status_of(&report, "a"), "success");
}

#[tokio::test]
async fn a_check_two_probes_list_runs_once_for_both() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    guest.touch("app-up");
    let config = format!(
        "checks:\n  app:\n    exec:\n      command: [sh, -c, 'echo run >> {}; sleep 1']\n    timeoutSeconds: 3\nreadinessProbe:\n  checks: [app]\nlivenessProbe:\n  checks: [app]\n",
        guest.path("runs-app").display()
    );
    let gateway = Gateway::start(&config, agent.socket());
    let (ready, live) = tokio::join!(gateway.get("/ready"), gateway.get("/live"));
    assert_eq!((ready.status, live.status), (200, 200));
    assert_eq!(guest.runs("app"), 1, "one guest process served both probes");
    // Each probe counts the result it answered with.
    for probe in ["readiness", "liveness"] {
        let series = format!(
            "probe_gateway_checks_total{{probe=\"{probe}\",check=\"app\",handler=\"exec\",result=\"success\"}}"
        );
        assert_eq!(gateway.metric(&series).await, 1.0, "{series}");
    }
}

#[tokio::test]
async fn metrics_label_each_check_and_requests_by_route_not_by_name() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    let gateway = Gateway::start(&three_checks(&guest), agent.socket());
    assert_eq!(gateway.get("/ready").await.status, 503);
    assert_eq!(gateway.get("/ready/agent").await.status, 200);
    assert_eq!(gateway.get("/ready/unknown-name").await.status, 404);
    for (series, value) in [
        (
            "probe_gateway_checks_total{probe=\"readiness\",check=\"agent\",handler=\"guestAgentPing\",result=\"success\"}",
            2.0,
        ),
        (
            "probe_gateway_checks_total{probe=\"readiness\",check=\"app\",handler=\"exec\",result=\"failure\"}",
            1.0,
        ),
        (
            "probe_gateway_checks_total{probe=\"readiness\",check=\"disk\",handler=\"exec\",result=\"failure\"}",
            1.0,
        ),
        (
            "probe_gateway_http_requests_total{path=\"/ready/{check}\",status=\"200\"}",
            1.0,
        ),
        (
            "probe_gateway_http_requests_total{path=\"/ready/{check}\",status=\"404\"}",
            1.0,
        ),
    ] {
        assert_eq!(gateway.metric(series).await, value, "{series}");
    }
    assert!(!gateway.get("/metrics").await.body.contains("unknown-name"));
}

#[tokio::test]
async fn named_checks_work_alike_over_hybrid_vsock() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    guest.touch("disk-ok");
    let relay = HybridVsock::start(1024, agent.socket());
    let address = format!("hybrid-vsock://{}?port=1024", relay.socket().display());
    let gateway = Gateway::start_with(&three_checks(&guest), &["--agent", &address]);
    let reply = gateway.get("/ready?verbose").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.starts_with("[+]agent ok\n"), "{}", reply.body);
    guest.touch("app-up");
    assert_eq!(gateway.get("/ready").await.status, 200);
    assert_eq!(gateway.get("/ready/app").await.status, 200);
}

/// `validate` names the mistakes of a config with named checks, each with its path.
#[test]
fn validate_names_each_mistake_in_named_checks_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &dir.path().join("gateway.yaml");
    std::fs::write(
        path,
        "checks:\n  App: {guestAgentPing: {}}\n  spare: {guestAgentPing: {}}\n  ok: {guestAgentPing: {}}\nreadinessProbe:\n  checks: [ok, missing]\n",
    )
    .unwrap();
    let shown = path.display().to_string();
    let (code, _, stderr) =
        crate::support::gateway::run_cli(&["validate", "--config", &shown], &[]);
    assert_eq!(code, 2, "{stderr}");
    for line in [
        "checks.App: \"App\" is not a check name",
        "checks.spare: defined but no probe lists it",
        "readinessProbe.checks[1]: no check named \"missing\" under checks (defined: App, ok, spare)",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
}

/// In background mode each named check has its own loop and threshold counts on the
/// probe's schedule: the probe passes while each check does, and `/ready/<name>` and
/// `?exclude=` read the same states, at once.
#[tokio::test]
async fn in_background_mode_each_check_keeps_its_own_thresholds() {
    let agent = QemuGa::start();
    let guest = Guest::of(&agent);
    guest.touch("app-up");
    guest.touch("disk-ok");
    let config = format!(
        "mode: background\n{}",
        three_checks(&guest).replace(
            "readinessProbe:\n  checks: [agent, app, disk]\n",
            "readinessProbe:\n  checks: [agent, app, disk]\n  periodSeconds: 1\n  failureThreshold: 2\n",
        )
    );
    let gateway = Gateway::start(&config, agent.socket());
    crate::support::eventually("readiness passes", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 200
    })
    .await;
    std::fs::remove_file(guest.path("disk-ok")).unwrap();
    // One failure of disk is counted but does not flip it (failureThreshold 2).
    crate::support::eventually("disk's first failure", Duration::from_secs(5), || async {
        let (_, report) = gateway.report("/ready/disk").await;
        report["consecutiveFailures"] == 1
    })
    .await;
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["reason"].as_str().unwrap().starts_with(
            "disk: exec: exit code 1 (failure 1 of failureThreshold 2: still passing)"
        ),
        "{report}"
    );
    crate::support::eventually("disk fails", Duration::from_secs(5), || async {
        gateway.get("/ready").await.status == 503
    })
    .await;
    let (status, disk) = gateway.report("/ready/disk").await;
    assert_eq!(status, 503);
    assert_eq!(disk["mode"], "background");
    assert!(disk["consecutiveFailures"].as_u64() >= Some(2), "{disk}");
    let (status, app) = gateway.report("/ready/app").await;
    assert_eq!(
        (status, app["consecutiveFailures"].as_u64()),
        (200, Some(0))
    );
    assert_eq!(gateway.get("/ready?exclude=disk").await.status, 200);
    // The answers are the loops' states: no request runs a check.
    let runs = guest.runs("app");
    for _ in 0..20 {
        gateway.get("/ready").await;
    }
    assert!(guest.runs("app") <= runs + 1, "at most the loop's own run");
}
