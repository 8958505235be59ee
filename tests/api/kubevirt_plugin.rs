//! The gateway as a KubeVirt 1.9 plugin sidecar (`serve --kubevirt-plugin`), driven as
//! virt-launcher drives it: `MutateDomain` from a gRPC client generated at test time from
//! KubeVirt's plugin proto (Python grpcio, not the gateway's server code), with each
//! invocation context; the fixtures; a real qemu-ga behind the channel's socket.

use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually;
use crate::support::gateway::{Gateway, run_cli};
use crate::support::hook::{
    Channel, channels, domain_fixture, mutate, plugin_call, vmi_fixture, vmi_with, vmi_with_probes,
};
use crate::support::qga::QemuGa;

/// A gateway in plugin mode, its plugin directory standing in for
/// `/var/run/kubevirt-plugin/probe-gateway/` (the volume's subPath it mounts).
struct Plugged {
    dir: tempfile::TempDir,
    gateway: Gateway,
}

impl Plugged {
    fn start(args: &[&str]) -> Plugged {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("probe-gateway/domain-hook.sock");
        let gateway = Gateway::start_plugin(&socket, args);
        Plugged { dir, gateway }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("probe-gateway/domain-hook.sock")
    }

    /// The private channel's socket: beside the plugin's, the same path for QEMU.
    fn channel(&self) -> PathBuf {
        self.dir.path().join("probe-gateway/probe-gateway-qga.sock")
    }

    fn mutate(&self, domain: &std::path::Path, context: &str) -> Value {
        mutate(&self.socket(), domain, &vmi_fixture(), context)
    }
}

fn the_gateways_channel(xml: &str) -> Vec<Channel> {
    channels(xml)
        .into_iter()
        .filter(|c| c.target_name.as_deref() == Some("org.qemu.guest_agent.1"))
        .collect()
}

#[test]
fn the_plugin_socket_is_a_socket_where_the_plugin_resource_names_it() {
    let plugged = Plugged::start(&[]);
    let metadata = std::fs::symlink_metadata(plugged.socket()).expect("the plugin socket");
    assert!(metadata.file_type().is_socket());
    // The one socket in the directory besides the channel QEMU will create.
    let entries: Vec<_> = std::fs::read_dir(plugged.socket().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["domain-hook.sock"]);
}

#[test]
fn mutate_domain_adds_the_channel_beside_the_plugin_socket_in_every_context() {
    let plugged = Plugged::start(&[]);
    let before = std::fs::read_to_string(domain_fixture()).unwrap();
    let boot = plugged.mutate(&domain_fixture(), "Boot");
    assert_eq!(boot["ok"], true, "{boot}");
    let after = boot["domain"].as_str().unwrap().to_string();
    assert_eq!(
        the_gateways_channel(&after),
        vec![Channel {
            kind: Some("unix".into()),
            source_mode: Some("bind".into()),
            source_path: Some(plugged.channel().display().to_string()),
            target_type: Some("virtio".into()),
            target_name: Some("org.qemu.guest_agent.1".into()),
        }]
    );
    // Only the channel was added: the rest of the domain is as it came.
    let start = before
        .bytes()
        .zip(after.bytes())
        .position(|(a, b)| a != b)
        .unwrap();
    let added = after.len() - before.len();
    assert_eq!(
        format!("{}{}", &after[..start], &after[start + added..]),
        before
    );

    // A migration's target is handed the domain as at boot: the same edit.
    let target = plugged.mutate(&domain_fixture(), "MigrationTarget");
    assert_eq!(target["domain"].as_str(), Some(after.as_str()), "{target}");
    // A boot defines the domain two or three times, each time with the result of the last:
    // the channel is added once.
    let defined = plugged.dir.path().join("defined.xml");
    std::fs::write(&defined, &after).unwrap();
    for context in ["Boot", "MigrationTarget"] {
        let again = plugged.mutate(&defined, context);
        assert_eq!(again["domain"].as_str(), Some(after.as_str()), "{context}");
    }
    // A context KubeVirt 1.9 never sends, or none: handled as a boot.
    let none = plugin_call(
        &plugged.socket(),
        &[
            "mutate",
            &domain_fixture().display().to_string(),
            &vmi_fixture().display().to_string(),
            "--no-context",
        ],
    );
    assert_eq!(none["domain"].as_str(), Some(after.as_str()), "{none}");
    let source = plugged.mutate(&domain_fixture(), "MigrationSource");
    assert_eq!(source["domain"].as_str(), Some(after.as_str()), "{source}");
}

#[tokio::test]
async fn malformed_xml_a_bad_vmi_or_another_domain_type_is_invalid_argument() {
    let plugged = Plugged::start(&[]);
    let broken = plugged.dir.path().join("broken.xml");
    let text = std::fs::read_to_string(domain_fixture())
        .unwrap()
        .replace("</devices>", "");
    std::fs::write(&broken, text).unwrap();
    let answer = plugged.mutate(&broken, "Boot");
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    assert!(
        answer["details"]
            .as_str()
            .unwrap()
            .contains("domain XML is malformed at byte"),
        "{answer}"
    );
    // The VMI: not JSON, and JSON without the checks' annotation.
    let not_json = plugged.dir.path().join("vmi.txt");
    std::fs::write(&not_json, "{not json").unwrap();
    let answer = mutate(&plugged.socket(), &domain_fixture(), &not_json, "Boot");
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    let unannotated = vmi_with_probes(plugged.dir.path(), None);
    let answer = mutate(&plugged.socket(), &domain_fixture(), &unannotated, "Boot");
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    assert!(
        answer["details"]
            .as_str()
            .unwrap()
            .contains("metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]: not set"),
        "{answer}"
    );
    let answer = plugin_call(
        &plugged.socket(),
        &[
            "mutate",
            &domain_fixture().display().to_string(),
            &vmi_fixture().display().to_string(),
            "Boot",
            "--domain-type",
            "cloud-hypervisor",
        ],
    );
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    // Nothing was defined; the gateway still serves and waits.
    let reply = plugged.gateway.get("/ready").await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.starts_with("waiting for the VM definition"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn after_mutate_domain_the_vmis_checks_run_through_the_channel() {
    let agent = QemuGa::start();
    let plugged = Plugged::start(&[]);
    let marker = plugged.dir.path().join("healthy");
    let probes = format!(
        "readinessProbe:\n  exec:\n    command: [cat, {}]\n  timeoutSeconds: 5\nlivenessProbe:\n  guestAgentPing: {{}}\n",
        marker.display()
    );
    let vmi = vmi_with_probes(plugged.dir.path(), Some(&probes));
    let answer = mutate(&plugged.socket(), &domain_fixture(), &vmi, "Boot");
    assert_eq!(answer["ok"], true, "{answer}");
    // QEMU creates the channel's socket once the domain starts.
    symlink(agent.socket(), plugged.channel()).unwrap();
    eventually(
        "the readiness check runs in the guest",
        Duration::from_secs(5),
        || async {
            let reply = plugged.gateway.get("/ready").await;
            reply.status == 503 && reply.body.starts_with("exec: exit code 1")
        },
    )
    .await;
    let (status, report) = plugged.gateway.report("/live").await;
    assert_eq!((status, &report["reason"]), (200, &Value::Null), "{report}");
    std::fs::write(&marker, "ok").unwrap();
    assert_eq!(plugged.gateway.get("/ready").await.status, 200);
}

#[tokio::test]
async fn checks_given_as_text_serve_from_the_start_and_the_vmi_brings_only_the_definition() {
    // How the injector runs it: the checks in PROBE_GATEWAY_CONFIG_TEXT.
    let agent = QemuGa::start();
    let config = "livenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";
    let plugged = Plugged::start(&["--config-text", config]);
    symlink(agent.socket(), plugged.channel()).unwrap();
    eventually(
        "liveness before any definition",
        Duration::from_secs(5),
        || async {
            let (status, report) = plugged.gateway.report("/live").await;
            status == 200 && report["reason"].is_null()
        },
    )
    .await;
    // A VMI without the annotation is fine here: the checks are the text's.
    let vmi = vmi_with(plugged.dir.path(), |vmi| {
        vmi["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("probe-gateway.kubevirt.io/probes");
    });
    let answer = mutate(&plugged.socket(), &domain_fixture(), &vmi, "Boot");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        the_gateways_channel(answer["domain"].as_str().unwrap()).len(),
        1
    );
}

#[test]
fn plugin_socket_paths_kubevirt_would_refuse_are_refused_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let linked = dir.path().join("linked");
    symlink(&real, &linked).unwrap();
    let long = format!(
        "/var/run/kubevirt-plugin/probe-gateway/{}.sock",
        "x".repeat(70)
    );
    for (socket, says) in [
        ("relative/hook.sock".to_string(), "is not an absolute path"),
        (
            "/tmp/probe-gateway/hook".to_string(),
            "does not end in .sock",
        ),
        (long, "a unix socket path holds 107"),
        ("/tmp/a/../b/hook.sock".to_string(), "is not a clean path"),
    ] {
        let (code, _, stderr) = run_cli(
            &["serve", "--kubevirt-plugin", "--plugin-socket", &socket],
            &[],
        );
        assert_eq!(code, 2, "{socket}: {stderr}");
        assert!(
            stderr.contains("--plugin-socket") && stderr.contains(says),
            "{socket}: {stderr}"
        );
    }
    let through_link = linked.join("hook.sock").display().to_string();
    let (code, _, stderr) = run_cli(
        &[
            "serve",
            "--kubevirt-plugin",
            "--plugin-socket",
            &through_link,
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is a symlink"), "{stderr}");
}

/// The injector's plugin-road patch, and deploy/plugin/plugin.yaml, against KubeVirt's own
/// validating policies for plugin sidecars and Plugin resources, written out as they are
/// in KubeVirt (main at d923fdb815 and v1.9.0) and evaluated with a CEL implementation
/// (tests/plugin/policies.py, cel-python); and the Plugin's hook condition, which selects
/// exactly the VMIs the injector decided for the plugin road.
#[tokio::test]
async fn the_plugin_road_pod_and_the_plugin_resource_pass_kubevirts_policies() {
    use crate::support::webhook::{IMAGE, Injector, TestCa, fixture, write_secret_volume};

    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(certs.path(), &ca.serving());
    let injector = Injector::start(&ca, &cert, &key, &["--image", IMAGE]);
    let mut pod = fixture("launcher-pod.json");
    pod["metadata"]["annotations"]["probe-gateway.kubevirt.io/decision"] = serde_json::json!(
        r#"{"v":1,"inject":true,"port":8190,"road":"plugin","reason":"plugin road"}"#
    );
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "kubevirt-plugin-sockets", "emptyDir": {}}));
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "kubevirt-plugin-sockets", "mountPath": "/var/run/kubevirt-plugin"}));
    let (_, patched) = injector.review("", "Pod", "CREATE", &pod).await;
    let gateway_index = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == "probe-gateway")
        .expect("the plugin sidecar");

    let dir = tempfile::tempdir().unwrap();
    let plugin_yaml =
        std::fs::read_to_string(crate::support::hook::repo().join("deploy/plugin/plugin.yaml"))
            .unwrap();
    let plugin: Value = serde_saphyr::from_str(&plugin_yaml).unwrap();
    let plugin_file = dir.path().join("plugin.json");
    std::fs::write(&plugin_file, plugin.to_string()).unwrap();
    let policies = |pod: &Value| -> Value {
        let pod_file = dir.path().join(format!("pod-{}.json", fastrand_suffix()));
        std::fs::write(&pod_file, pod.to_string()).unwrap();
        let output = std::process::Command::new("python3")
            .arg(crate::support::hook::repo().join("tests/plugin/policies.py"))
            .arg(&pod_file)
            .arg(&plugin_file)
            .output()
            .expect("run python3 tests/plugin/policies.py");
        assert!(
            output.status.success(),
            "policies.py failed ({}): {}\n(scripts/test.sh installs cel-python from scripts/requirements-test.txt)",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };

    let results = policies(&patched);
    for check in [
        "subpath-main",
        "subpath-v1.9.0",
        "socket-path-ends-in-sock",
        "socket-path-fits",
        "socket-path-in-plugin-dir",
        "one-of-cel-or-sidecar",
        "hook-failure-strategy",
        "node-hook-failure-strategy",
        "plugin-failure-strategy",
    ] {
        assert_eq!(results[check], true, "{check}: {results}");
    }
    assert_eq!(
        results["condition"],
        serde_json::json!({
            "plugin-road": true,
            "libvirt-road": false,
            "not-injected": false,
            "other-annotations": false,
            "no-annotations": false,
        })
    );

    // The policies can fail: the sidecar's mount without its subPath is denied by both.
    let mut no_sub_path = patched.clone();
    no_sub_path["spec"]["initContainers"][gateway_index]["volumeMounts"][0]
        .as_object_mut()
        .unwrap()
        .remove("subPath");
    let results = policies(&no_sub_path);
    assert_eq!(results["subpath-main"], false, "{results}");
    assert_eq!(results["subpath-v1.9.0"], false, "{results}");
    // And v1.9.0's cannot read a container without volume mounts (a denial there): why the
    // gateway always has one.
    let mut bare = patched.clone();
    bare["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "bare", "image": "x"}));
    let results = policies(&bare);
    assert_eq!(results["subpath-main"], true, "{results}");
    assert!(
        results["subpath-v1.9.0"]
            .as_str()
            .is_some_and(|r| r.starts_with("containersHaveSubPath: error: ")),
        "{results}"
    );
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
