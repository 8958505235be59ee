//! The injector on launcher pods as virt-controller renders them: for each case of
//! tests/inject/fixtures/kubevirt/ (VMIs as users write them, defaulted as KubeVirt's own
//! webhook leaves them, and the pods virt-controller renders from them, each rule with its
//! source file and line at the KubeVirt commit pinned in index.json), the reviews over real
//! HTTPS with certificate verification; the returned patch applied by an independent
//! implementation (Python `jsonpatch`), and the pod that results valid by Kubernetes' own
//! schema (`kubernetes-validate`, strict: unknown fields are errors) and by the rules a
//! schema cannot say (tests/inject/check_pod.py).

use serde_json::Value;

use crate::support::hook::repo;
use crate::support::webhook::{IMAGE, Injector, TestCa, write_secret_volume};

/// The Kubernetes versions the patched pods are validated against: the first with native
/// sidecars on by default, and the first with them GA.
const KUBERNETES_VERSIONS: &str = "1.29.0,1.33.0";

const DECISION: &str = "probe-gateway.kubevirt.io/decision";

fn fixture(name: &str) -> Value {
    let path = repo().join("tests/inject/fixtures/kubevirt").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// check_pod.py's verdict on `pod` and the review's `response`.
fn check(dir: &std::path::Path, case: &str, pod: &Value, response: &Value) -> Value {
    let pod_file = dir.join(format!("{case}-pod.json"));
    let response_file = dir.join(format!("{case}-response.json"));
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    std::fs::write(&response_file, response.to_string()).unwrap();
    let output = std::process::Command::new("python3")
        .arg(repo().join("tests/inject/check_pod.py"))
        .arg(&pod_file)
        .arg(&response_file)
        .arg(KUBERNETES_VERSIONS)
        .output()
        .expect("run python3 tests/inject/check_pod.py");
    assert!(
        output.status.success(),
        "{case}: check_pod.py failed ({}): {}\n(scripts/test.sh installs jsonpatch and kubernetes-validate from scripts/requirements-test.txt)",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn kubevirt_rendered_vmis_and_pods_get_the_decisions_and_valid_patches_their_rules_call_for()
{
    let index = fixture("index.json");
    let commit = index["kubevirt"].as_str().unwrap();
    assert_eq!(commit.len(), 40, "the KubeVirt commit is pinned");
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(certs.path(), &ca.serving());
    let injector = Injector::start(&ca, &cert, &key, &["--image", IMAGE]);
    let work = tempfile::tempdir().unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert!(cases.len() >= 12, "{}", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        assert!(
            case["rules"].as_array().is_some_and(|rules| rules
                .iter()
                .all(|r| r["source"].as_str().is_some_and(|s| s.contains(':')))),
            "{name}: every rule names its source file and line"
        );

        // The VMI: the decision written, whatever was there.
        let vmi = fixture(case["vmi"].as_str().unwrap());
        let (response, decided) = injector
            .review("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi)
            .await;
        let written = decided["metadata"]["annotations"][DECISION]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no decision written: {response}"));
        let decision: Value = serde_json::from_str(written).unwrap();
        match case["vmi_decision"].as_str().unwrap() {
            "inject" => assert_eq!(decision["inject"], true, "{name}: {written}"),
            "skip" => {
                assert_eq!(decision["inject"], false, "{name}: {written}");
                assert_ne!(
                    decision["reason"], "no exec or guestAgentPing probe",
                    "{name}"
                );
            }
            "none" => assert_eq!(
                decision["reason"], "no exec or guestAgentPing probe",
                "{name}: {written}"
            ),
            other => panic!("{name}: vmi_decision {other}"),
        }

        let Some(pod_file) = case["pod"].as_str() else {
            continue;
        };
        // The pod: virt-controller copied the VMI's annotations, so it carries what the
        // injector wrote on the VMI (a temporary pod too).
        let pod = fixture(pod_file);
        if case["vmi_decision"] != "none" {
            assert_eq!(
                pod["metadata"]["annotations"][DECISION].as_str(),
                Some(written),
                "{name}: the pod carries the VMI's decision"
            );
        }
        let (response, _) = injector.review("", "Pod", "CREATE", &pod).await;
        let verdict = check(work.path(), name, &pod, &response);
        // Valid wherever the pod as rendered is (an image volume, KubeVirt's default for
        // container disks at the pinned commit, needs Kubernetes 1.31), and on 1.33.
        for (version, result) in verdict["schema"].as_object().unwrap() {
            if verdict["schema_before"][version] == "ok" || version == "1.33.0" {
                assert_eq!(result, "ok", "{name}: Kubernetes {version}'s schema");
            }
        }
        for (rule, result) in verdict["rules"].as_object().unwrap() {
            assert_eq!(result, &Value::Bool(true), "{name}: {rule}");
        }
        let patched = &verdict["patched"];
        let gateway = patched["spec"]["initContainers"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["name"] == "probe-gateway"));
        match case["pod_outcome"].as_str().unwrap() {
            "patched" => {
                let gateway = gateway.unwrap_or_else(|| panic!("{name}: no gateway"));
                let resources = &gateway["resources"];
                if case["guaranteed"] == true {
                    assert_eq!(resources["requests"], resources["limits"], "{name}");
                } else {
                    assert_ne!(resources["requests"], resources["limits"], "{name}");
                }
                let compute = &patched["spec"]["containers"][0];
                for probe in ["readinessProbe", "livenessProbe"] {
                    if !compute[probe].is_null() {
                        assert_eq!(compute[probe]["httpGet"]["port"], 8190, "{name} {probe}");
                    }
                }
            }
            "unchanged" | "skipped" => {
                assert!(response["patch"].is_null(), "{name}: {response}");
                assert!(gateway.is_none(), "{name}");
            }
            other => panic!("{name}: pod_outcome {other}"),
        }
        eprintln!(
            "{name}: VMI {}, pod {} (Kubernetes schemas {}; rules hold)",
            if decision["inject"] == true {
                "injected"
            } else {
                "not injected"
            },
            case["pod_outcome"].as_str().unwrap(),
            verdict["schema"]
        );
    }
}

/// A VM whose template carries the gateway's annotation (three named checks, a startup
/// probe): KubeVirt copies it to the launcher pod, whose patch then also gives compute a
/// startup probe on `/started` and readiness the annotation's schedule; the result is as
/// valid as the seed's, and the guaranteed pod stays guaranteed.
#[tokio::test]
async fn a_pod_whose_vm_has_named_checks_and_a_startup_probe_is_patched_validly() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(certs.path(), &ca.serving());
    let injector = Injector::start(&ca, &cert, &key, &["--image", IMAGE]);
    let work = tempfile::tempdir().unwrap();
    let annotation = "checks:\n  agent: {guestAgentPing: {}}\n  app: {exec: {command: [systemctl, is-active, app]}, timeoutSeconds: 3}\n  disk: {exec: {command: [test, -w, /var/lib/app]}}\nreadinessProbe:\n  checks: [agent, app, disk]\n  periodSeconds: 5\nlivenessProbe:\n  checks: [agent]\nstartupProbe:\n  checks: [app]\n  failureThreshold: 30\n";
    for case in ["seed", "dedicated-cpu"] {
        let mut pod = fixture(&format!("pod-{case}.json"));
        pod["metadata"]["annotations"]["probe-gateway.kubevirt.io/probes"] =
            Value::String(annotation.into());
        let (response, _) = injector.review("", "Pod", "CREATE", &pod).await;
        let verdict = check(work.path(), &format!("{case}-named"), &pod, &response);
        for (version, result) in verdict["schema"].as_object().unwrap() {
            assert_eq!(result, "ok", "{case}: Kubernetes {version}'s schema");
        }
        for (rule, result) in verdict["rules"].as_object().unwrap() {
            assert_eq!(result, &Value::Bool(true), "{case}: {rule}");
        }
        let compute = &verdict["patched"]["spec"]["containers"][0];
        assert_eq!(
            compute["startupProbe"]["httpGet"]["path"], "/started",
            "{case}"
        );
        assert_eq!(compute["readinessProbe"]["periodSeconds"], 5, "{case}");
        assert_eq!(
            compute["livenessProbe"]["httpGet"]["path"], "/live",
            "{case}"
        );
    }
}
