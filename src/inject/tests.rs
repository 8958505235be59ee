//! The webhook's answers, review in and patch out: each test sends an AdmissionReview as
//! the apiserver would, applies the returned JSON Patch to the object with the `json-patch`
//! crate (as the apiserver applies it) and checks the object that results.

use base64::Engine as _;
use serde_json::{Value, json};

use super::admission::{BadReview, Outcome, review};
use super::decision::Road;
use super::launcher_pod::{CONFIG_ENV, CONTAINER_NAME};
use super::testing::{IMAGE, fixture, settings};
use crate::config::{InjectSettings, parse_document};

const DECISION: &str = "probe-gateway.kubevirt.io/decision";

/// A change to a fixture.
type Edit = fn(&mut Value);

/// tests/inject/fixtures/review.json (as the apiserver sends one) for `object`.
fn review_body(group: &str, kind: &str, operation: &str, object: &Value) -> Vec<u8> {
    let resource = match kind {
        "Pod" => "pods",
        "VirtualMachine" => "virtualmachines",
        _ => "virtualmachineinstances",
    };
    let mut review = fixture("review.json");
    let request = &mut review["request"];
    for field in ["kind", "requestKind"] {
        request[field] = json!({"group": group, "version": "v1", "kind": kind});
    }
    for field in ["resource", "requestResource"] {
        request[field] = json!({"group": group, "version": "v1", "resource": resource});
    }
    request["operation"] = json!(operation);
    request["object"] = object.clone();
    serde_json::to_vec(&review).unwrap()
}

/// The review's answer: the response, and the object with its patch applied.
struct Answer {
    response: Value,
    patched: Value,
    outcome: Outcome,
    detail: String,
}

impl Answer {
    fn warnings(&self) -> Vec<String> {
        self.response["warnings"]
            .as_array()
            .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    fn has_patch(&self) -> bool {
        !self.response["patch"].is_null()
    }
}

fn answer_with(
    settings: &InjectSettings,
    group: &str,
    kind: &str,
    operation: &str,
    object: &Value,
) -> Answer {
    let (body, handled) = review(
        &review_body(group, kind, operation, object),
        settings,
        Road::Libvirt,
    )
    .unwrap();
    let document: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(document["kind"], "AdmissionReview");
    let response = document["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true, "never denied: {response}");
    let mut patched = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    Answer {
        response,
        patched,
        outcome: handled.outcome,
        detail: handled.detail,
    }
}

fn answer_of(group: &str, kind: &str, operation: &str, object: &Value) -> Answer {
    answer_with(&settings(), group, kind, operation, object)
}

fn pod_answer(pod: &Value) -> Answer {
    answer_of("", "Pod", "CREATE", pod)
}

fn gateway_of(pod: &Value) -> &Value {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == CONTAINER_NAME))
        .unwrap_or_else(|| panic!("no gateway container: {pod:#}"))
}

/// Kubernetes' rule for a probe: exactly one handler.
fn handlers(probe: &Value) -> Vec<&str> {
    ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|h| !probe[*h].is_null())
        .collect()
}

#[test]
fn a_launcher_pod_gets_the_gateway_and_its_probes_pointed_at_it() {
    let pod = fixture("launcher-pod.json");
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Patched, "{}", answer.detail);
    let patched = &answer.patched;

    // Compute stays first; KubeVirt's init containers stay, the gateway comes after them.
    let compute = &patched["spec"]["containers"][0];
    assert_eq!(compute["name"], "compute");
    let init: Vec<&str> = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        init,
        ["guest-console-log", "container-disk-binary", CONTAINER_NAME]
    );

    // The probes: one handler each, httpGet on the numeric port; kubelet's numbers as
    // KubeVirt rendered them.
    for (field, path, numbers) in [
        ("readinessProbe", "/ready", [130, 6, 10, 1, 10]),
        ("livenessProbe", "/live", [10, 2, 10, 1, 3]),
    ] {
        let probe = &compute[field];
        assert_eq!(handlers(probe), ["httpGet"], "{field}: {probe}");
        assert_eq!(
            probe["httpGet"],
            json!({"path": path, "port": 8190, "scheme": "HTTP"})
        );
        let got: Vec<i64> = [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ]
        .iter()
        .map(|n| probe[*n].as_i64().unwrap())
        .collect();
        assert_eq!(got, numbers, "{field}");
    }

    // The gateway container.
    let gateway = gateway_of(patched);
    assert_eq!(gateway["image"], IMAGE);
    assert_eq!(gateway["restartPolicy"], "Always");
    assert_eq!(
        gateway["command"],
        json!(["/usr/local/bin/virt-probe-gateway-libvirt"])
    );
    assert_eq!(
        gateway["args"],
        json!(["serve", "--listen", "[::]:8190", "--log-format", "json"])
    );
    assert_eq!(
        gateway["securityContext"],
        json!({"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": true, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(
        gateway["volumeMounts"],
        json!([
            {"name": "libvirt-runtime", "mountPath": "/var/run/libvirt"},
            {"name": "probe-gateway-podinfo", "mountPath": "/etc/probe-gateway/pod", "readOnly": true},
        ])
    );
    // The pod's annotations, for the maintenance pause.
    assert_eq!(
        gateway["env"][1],
        json!({"name": "PROBE_GATEWAY_POD_ANNOTATIONS", "value": "/etc/probe-gateway/pod/annotations"})
    );
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.last().unwrap(),
        &json!({"name": "probe-gateway-podinfo", "downwardAPI": {"items": [
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}
        ]}})
    );
    assert_eq!(
        gateway["resources"],
        json!({"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}})
    );
    assert!(gateway["livenessProbe"].is_null() && gateway["readinessProbe"].is_null());

    // Its checks: the VMI's, as the virt-probe lines gave them, through libvirt.
    let env = &gateway["env"][0];
    assert_eq!(env["name"], CONFIG_ENV);
    let config: Value = serde_json::from_str(env["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        config,
        json!({
            "agent": "libvirt:default_vm-fedora",
            "minIntervalSeconds": 1,
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/healthy.txt"]}, "timeoutSeconds": 5},
            "livenessProbe": {"guestAgentPing": {}, "timeoutSeconds": 1},
        })
    );
    assert!(parse_document(env["value"].as_str().unwrap()).is_ok());

    // Nothing else changed: the patched pod less the gateway, its volume and the probes'
    // handlers is the pod as it came, fields unknown to the webhook included.
    let mut back = patched.clone();
    back["spec"]["initContainers"].as_array_mut().unwrap().pop();
    back["spec"]["volumes"].as_array_mut().unwrap().pop();
    for field in ["readinessProbe", "livenessProbe"] {
        back["spec"]["containers"][0][field]
            .as_object_mut()
            .unwrap()
            .remove("httpGet");
        back["spec"]["containers"][0][field]["exec"] =
            pod["spec"]["containers"][0][field]["exec"].clone();
    }
    assert_eq!(back, pod);
    assert_eq!(
        patched["spec"]["x-field-from-a-newer-kubernetes"]["kept"],
        "byte for byte"
    );
}

#[test]
fn a_pod_already_injected_comes_back_unchanged() {
    let first = pod_answer(&fixture("launcher-pod.json"));
    let again = pod_answer(&first.patched);
    assert_eq!(again.outcome, Outcome::Unchanged);
    assert!(!again.has_patch());
    assert!(again.warnings().is_empty());
}

#[test]
fn a_pod_to_be_guaranteed_gets_requests_equal_to_limits() {
    let mut pod = fixture("launcher-pod.json");
    pod["spec"]["containers"][0]["resources"] = json!({
        "requests": {"cpu": "2", "memory": "2294Mi"},
        "limits": {"cpu": "2000m", "memory": "2294Mi"},
    });
    let answer = pod_answer(&pod);
    let resources = &gateway_of(&answer.patched)["resources"];
    assert_eq!(resources["requests"], resources["limits"]);
    assert_eq!(
        resources["limits"],
        json!({"cpu": "100m", "memory": "64Mi"})
    );
}

#[test]
fn what_the_webhook_cannot_take_over_keeps_the_stock_probes_with_a_warning() {
    let cases: [(&str, Edit, &str); 6] = [
        (
            "root",
            |pod| {
                pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
            },
            "the VMI runs as root",
        ),
        (
            "unreadable line",
            |pod| {
                pod["spec"]["containers"][0]["livenessProbe"]["exec"]["command"] = json!([
                    "virt-probe",
                    "--domainName",
                    "default_vm-fedora",
                    "--frobnicate"
                ]);
            },
            "its livenessProbe virt-probe line does not read: virt-probe has no flag --frobnicate",
        ),
        (
            "other domain",
            |pod| {
                pod["spec"]["containers"][0]["livenessProbe"]["exec"]["command"][2] =
                    json!("other_vm");
            },
            "its livenessProbe probes domain \"other_vm\", not the VMI's \"default_vm-fedora\"",
        ),
        (
            "another version's decision",
            |pod| {
                pod["metadata"]["annotations"][DECISION] =
                    json!(r#"{"v":2,"inject":true,"port":1,"reason":""}"#);
            },
            "is written by another release of the injector (version 2",
        ),
        (
            "no libvirt volume",
            |pod| {
                pod["spec"]["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|v| v["name"] != "libvirt-runtime");
            },
            "it has no libvirt-runtime volume",
        ),
        (
            "no compute container",
            |pod| {
                pod["spec"]["containers"][0]["name"] = json!("not-compute");
            },
            "it has no compute container",
        ),
    ];
    for (case, edit, says) in cases {
        let mut pod = fixture("launcher-pod.json");
        edit(&mut pod);
        let answer = pod_answer(&pod);
        assert_eq!(answer.outcome, Outcome::Skipped, "{case}");
        assert!(!answer.has_patch(), "{case}");
        let warnings = answer.warnings();
        assert_eq!(warnings.len(), 1, "{case}");
        assert!(
            warnings[0].starts_with("virt-probe-gateway: launcher pod keeps the stock probes: ")
                && warnings[0].contains(says),
            "{case}: {warnings:?}"
        );
    }
}

#[test]
fn pods_not_decided_for_injection_are_left_alone_silently() {
    let edits: [Edit; 5] = [
        |pod| {
            pod["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove(DECISION);
        },
        |pod| {
            pod["metadata"]["annotations"][DECISION] =
                json!(r#"{"v":1,"inject":false,"reason":"bridge"}"#);
        },
        |pod| {
            pod["metadata"]["annotations"]["kubevirt.io/ephemeral-provisioning"] = json!("true");
        },
        |pod| {
            pod["metadata"]["labels"]["kubevirt.io/ephemeral-provisioning"] = json!("true");
        },
        |pod| {
            pod["spec"]["containers"][0]["readinessProbe"] = json!({"httpGet": {"port": 80}});
            pod["spec"]["containers"][0]["livenessProbe"] = Value::Null;
        },
    ];
    for edit in edits {
        let mut pod = fixture("launcher-pod.json");
        edit(&mut pod);
        let answer = pod_answer(&pod);
        assert_eq!(answer.outcome, Outcome::Unchanged, "{}", answer.detail);
        assert!(!answer.has_patch() && answer.warnings().is_empty());
    }
}

#[test]
fn http_and_other_exec_probes_are_left_as_they_are() {
    let mut pod = fixture("launcher-pod.json");
    let http = json!({"httpGet": {"port": 80, "path": "/"}, "initialDelaySeconds": 10, "timeoutSeconds": 1});
    pod["spec"]["containers"][0]["readinessProbe"] = http.clone();
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Patched);
    let compute = &answer.patched["spec"]["containers"][0];
    assert_eq!(compute["readinessProbe"], http);
    assert_eq!(compute["livenessProbe"]["httpGet"]["path"], "/live");
    let config: Value = serde_json::from_str(
        gateway_of(&answer.patched)["env"][0]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(config["readinessProbe"].is_null(), "{config}");
}

#[test]
fn image_pull_secrets_are_added_once() {
    let mut settings = settings();
    settings.image_pull_secrets = vec!["regcred".into(), "mirror".into()];
    let pod = fixture("launcher-pod.json");
    let answer = answer_with(&settings, "", "Pod", "CREATE", &pod);
    assert_eq!(
        answer.patched["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}, {"name": "mirror"}])
    );
    let mut pod = fixture("launcher-pod.json");
    pod["spec"]["imagePullSecrets"] = json!([{"name": "mirror"}]);
    let answer = answer_with(&settings, "", "Pod", "CREATE", &pod);
    assert_eq!(
        answer.patched["spec"]["imagePullSecrets"],
        json!([{"name": "mirror"}, {"name": "regcred"}])
    );
}

#[test]
fn a_vmi_gets_the_decision_whatever_value_was_there() {
    let vmi = fixture("vmi.json");
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi);
    assert_eq!(answer.outcome, Outcome::Patched);
    let written = answer.patched["metadata"]["annotations"][DECISION]
        .as_str()
        .unwrap();
    assert_eq!(
        written,
        r#"{"v":1,"inject":true,"port":8190,"road":"libvirt","reason":"its readiness and liveness probe will be answered by the gateway on port 8190, through libvirt"}"#
    );
    assert_eq!(
        answer.warnings(),
        [
            "virt-probe-gateway: its readiness and liveness probe will be answered by the gateway on port 8190, through libvirt"
        ]
    );
    // Again: unchanged, the warning still said.
    let again = answer_with(
        &settings(),
        "kubevirt.io",
        "VirtualMachineInstance",
        "UPDATE",
        &answer.patched,
    );
    assert_eq!(again.outcome, Outcome::Unchanged);
    assert!(!again.has_patch());
    // A bridge VMI someone marked eligible by hand: the decision is written over it.
    let mut bridge = fixture("vmi.json");
    bridge["spec"]["domain"]["devices"]["interfaces"][0] = json!({"name": "default", "bridge": {}});
    bridge["metadata"]["annotations"][DECISION] =
        json!(r#"{"v":1,"inject":true,"port":8190,"reason":"trust me"}"#);
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "UPDATE", &bridge);
    let written = answer.patched["metadata"]["annotations"][DECISION]
        .as_str()
        .unwrap();
    assert!(written.contains(r#""inject":false"#), "{written}");
    assert!(
        answer
            .detail
            .ends_with("(the value that was there is replaced)")
    );
    // No annotations at all: the map is added.
    let mut bare = fixture("vmi.json");
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &bare);
    assert!(answer.patched["metadata"]["annotations"][DECISION].is_string());
}

#[test]
fn a_vmi_without_probes_to_take_over_is_decided_silently() {
    let mut vmi = fixture("vmi.json");
    vmi["spec"]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    vmi["spec"].as_object_mut().unwrap().remove("livenessProbe");
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi);
    assert!(answer.warnings().is_empty());
    let written = answer.patched["metadata"]["annotations"][DECISION]
        .as_str()
        .unwrap();
    assert!(written.contains(r#""inject":false"#));
}

#[test]
fn a_vm_is_told_the_decision_and_not_changed() {
    let mut vm = fixture("vm.json");
    let answer = answer_of("kubevirt.io", "VirtualMachine", "CREATE", &vm);
    assert!(!answer.has_patch());
    assert_eq!(answer.warnings().len(), 1);
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][0]
        .as_object_mut()
        .unwrap()
        .remove("ports");
    let answer = answer_of("kubevirt.io", "VirtualMachine", "UPDATE", &vm);
    assert!(!answer.has_patch());
    assert_eq!(answer.outcome, Outcome::Skipped);
    assert!(answer.warnings()[0].starts_with(
        "virt-probe-gateway: stock probes kept: its masquerade interface has no ports list"
    ));
    // Opted out on the VM.
    vm["metadata"]["annotations"] = json!({"probe-gateway.kubevirt.io/inject": "false"});
    let answer = answer_of("kubevirt.io", "VirtualMachine", "UPDATE", &vm);
    assert!(answer.warnings()[0].contains("opted out"));
}

#[test]
fn a_malformed_object_is_allowed_unchanged_with_a_warning() {
    let mut vmi = fixture("vmi.json");
    vmi["spec"]["networks"] = json!("default");
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi);
    assert_eq!(answer.outcome, Outcome::Malformed);
    assert!(!answer.has_patch());
    assert_eq!(
        answer.warnings(),
        ["virt-probe-gateway: not handled, cannot read the object: spec.networks: not a list"]
    );
    let mut pod = fixture("launcher-pod.json");
    pod["spec"]["containers"] = json!({"name": "compute"});
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Skipped);
    assert!(
        answer.warnings()[0].contains("spec.containers: not a list"),
        "{:?}",
        answer.warnings()
    );
    // An object kube's own types would refuse (metadata.annotations not a map): still an
    // answer, not a 400.
    let mut vmi = fixture("vmi.json");
    vmi["metadata"]["annotations"] = json!(["a"]);
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi);
    assert_eq!(answer.outcome, Outcome::Malformed);
}

#[test]
fn other_kinds_and_operations_are_allowed_unchanged() {
    let pod = fixture("launcher-pod.json");
    for (group, kind, operation) in [
        ("", "Pod", "UPDATE"),
        ("", "ConfigMap", "CREATE"),
        ("kubevirt.io", "VirtualMachine", "DELETE"),
    ] {
        let answer = answer_of(group, kind, operation, &pod);
        assert_eq!(answer.outcome, Outcome::Unchanged);
        assert!(!answer.has_patch());
    }
}

#[test]
fn a_body_that_is_not_an_admission_review_is_refused_naming_why() {
    let settings = settings();
    let cases: [(&[u8], &str); 6] = [
        (b"not json", "the body is not JSON: expected ident at line 1 column 2"),
        (b"[]", "not an admission.k8s.io/v1 AdmissionReview: the body is not a JSON object"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
            "not an admission.k8s.io/v1 AdmissionReview: apiVersion is \"admission.k8s.io/v1beta1\"; this webhook serves admission.k8s.io/v1 only",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "not an admission.k8s.io/v1 AdmissionReview: request is missing",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{}}"#,
            "not an admission.k8s.io/v1 AdmissionReview: kind is not AdmissionReview",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#,
            "not an admission.k8s.io/v1 AdmissionReview: request: missing field `uid`",
        ),
    ];
    for (body, says) in cases {
        let error = review(body, &settings, Road::Libvirt).unwrap_err();
        assert!(matches!(
            error,
            BadReview::NotJson(_) | BadReview::NotAReview(_)
        ));
        assert_eq!(error.to_string(), says);
    }
}

/// The fixture pod as KubeVirt renders it with the Plugins gate on, its VMI decided for
/// the plugin road.
fn plugin_road_pod() -> Value {
    let mut pod = fixture("launcher-pod.json");
    pod["metadata"]["annotations"][DECISION] =
        json!(r#"{"v":1,"inject":true,"port":8190,"road":"plugin","reason":"plugin road"}"#);
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "kubevirt-plugin-sockets", "emptyDir": {}}));
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "kubevirt-plugin-sockets", "mountPath": "/var/run/kubevirt-plugin"}));
    pod
}

#[test]
fn a_plugin_road_pod_gets_the_plugin_sidecar_on_its_own_subpath() {
    let answer = pod_answer(&plugin_road_pod());
    assert_eq!(answer.outcome, Outcome::Patched, "{}", answer.detail);
    let gateway = gateway_of(&answer.patched);
    assert_eq!(
        gateway["command"],
        json!(["/usr/local/bin/virt-probe-gateway"])
    );
    assert_eq!(
        gateway["args"],
        json!([
            "serve",
            "--kubevirt-plugin",
            "--plugin-socket",
            "/var/run/kubevirt-plugin/probe-gateway/domain-hook.sock",
            "--listen",
            "[::]:8190",
            "--log-format",
            "json"
        ])
    );
    assert_eq!(
        gateway["volumeMounts"][0],
        json!({"name": "kubevirt-plugin-sockets", "mountPath": "/var/run/kubevirt-plugin/probe-gateway", "subPath": "probe-gateway"})
    );
    // The agent is the private channel the gateway adds at MutateDomain: none is named.
    let config: Value = serde_json::from_str(gateway["env"][0]["value"].as_str().unwrap()).unwrap();
    assert!(config["agent"].is_null(), "{config}");
    assert_eq!(
        config["livenessProbe"],
        json!({"guestAgentPing": {}, "timeoutSeconds": 1})
    );
    assert_eq!(
        answer.patched["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/ready"
    );
    assert!(
        answer.detail.ends_with("by the plugin road"),
        "{}",
        answer.detail
    );
}

#[test]
fn a_plugin_road_pod_without_the_plugin_volume_keeps_its_probes() {
    let mut pod = plugin_road_pod();
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] != "kubevirt-plugin-sockets");
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Skipped);
    assert!(!answer.has_patch());
    assert!(
        answer.warnings()[0]
            .contains("KubeVirt's Plugins feature gate, which the plugin road needs, is off"),
        "{:?}",
        answer.warnings()
    );
}

#[test]
fn a_vmi_in_a_plugin_namespace_is_decided_for_the_plugin_road() {
    let vmi = fixture("vmi.json");
    let (body, _) = review(
        &review_body("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi),
        &settings(),
        Road::Plugin,
    )
    .unwrap();
    let document: Value = serde_json::from_slice(&body).unwrap();
    let warnings = document["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .ends_with("the guest must run a second qemu-ga on org.qemu.guest_agent.1)"),
        "{warnings:?}"
    );
}

/// The gateway's annotation with three named checks, a startup probe and a readiness
/// schedule of its own, as the VM's template carries it (and KubeVirt copies it to the VMI
/// and the launcher pod).
const NAMED_CHECKS: &str = "checks:\n  agent: {guestAgentPing: {}}\n  app: {exec: {command: [systemctl, is-active, app]}, timeoutSeconds: 3}\n  disk: {exec: {command: [test, -w, /var/lib/app]}}\nreadinessProbe:\n  checks: [agent, app, disk]\n  periodSeconds: 5\n  failureThreshold: 2\nstartupProbe:\n  checks: [app]\n  periodSeconds: 10\n  failureThreshold: 30\n";

fn annotated_pod(annotation: &str) -> Value {
    let mut pod = fixture("launcher-pod.json");
    pod["metadata"]["annotations"][crate::config::PROBES_ANNOTATION] = json!(annotation);
    pod
}

#[test]
fn the_annotations_checks_go_to_the_gateway_and_its_probes_to_kubelet() {
    let pod = annotated_pod(NAMED_CHECKS);
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Patched, "{}", answer.detail);
    let patched = &answer.patched;
    let compute = &patched["spec"]["containers"][0];

    // Readiness: the annotation's schedule, a timeout 1 s over its longest check.
    assert_eq!(
        compute["readinessProbe"],
        json!({
            "httpGet": {"path": "/ready", "port": 8190, "scheme": "HTTP"},
            "initialDelaySeconds": 0,
            "timeoutSeconds": 4,
            "periodSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 2,
        })
    );
    // Liveness, which the annotation leaves out: the VMI's virt-probe line, as before.
    assert_eq!(handlers(&compute["livenessProbe"]), ["httpGet"]);
    assert_eq!(compute["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(compute["livenessProbe"]["periodSeconds"], 10);
    // Startup: /started, long enough for the gateway to decide first: 30 periods of 10 s,
    // a 3 s check and the 60 s allowance, in 10 s periods.
    assert_eq!(
        compute["startupProbe"],
        json!({
            "httpGet": {"path": "/started", "port": 8190, "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "successThreshold": 1,
            "failureThreshold": 37,
        })
    );

    // The gateway's config: the annotation's document, the agent, the liveness line.
    let gateway = gateway_of(patched);
    let text = gateway["env"][0]["value"].as_str().unwrap();
    let config: Value = serde_json::from_str(text).unwrap();
    assert_eq!(config["agent"], "libvirt:default_vm-fedora");
    assert_eq!(
        config["readinessProbe"]["checks"],
        json!(["agent", "app", "disk"])
    );
    assert_eq!(config["checks"]["app"]["timeoutSeconds"], 3);
    assert_eq!(config["startupProbe"]["failureThreshold"], 30);
    assert_eq!(
        config["livenessProbe"],
        json!({"guestAgentPing": {}, "timeoutSeconds": 1})
    );
    let file = parse_document(text).unwrap();
    assert_eq!(file.readiness.unwrap().checks.len(), 3);
    assert!(
        answer
            .detail
            .contains("its readiness, liveness and startup probe"),
        "{}",
        answer.detail
    );
}

#[test]
fn on_the_plugin_road_kubelets_startup_window_takes_in_the_liveness_grace() {
    let mut pod = plugin_road_pod();
    pod["metadata"]["annotations"][crate::config::PROBES_ANNOTATION] =
        json!(format!("livenessGraceSeconds: 300\n{NAMED_CHECKS}"));
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Patched, "{}", answer.detail);
    // (30 × 10 + 3 + 60 + 300) / 10, rounded up.
    assert_eq!(
        answer.patched["spec"]["containers"][0]["startupProbe"]["failureThreshold"],
        67
    );
}

#[test]
fn an_invalid_annotation_keeps_the_stock_probes_naming_the_mistakes() {
    let answer = pod_answer(&annotated_pod("readinessProbe:\n  checks: [nope]\n"));
    assert_eq!(answer.outcome, Outcome::Skipped);
    assert!(!answer.has_patch());
    let warnings = answer.warnings();
    assert_eq!(
        warnings,
        [
            "virt-probe-gateway: launcher pod keeps the stock probes: its probe-gateway.kubevirt.io/probes annotation is not valid: readinessProbe.checks[0]: no check named \"nope\": define it under checks"
        ]
    );
}

#[test]
fn a_vmi_whose_probes_are_only_in_the_annotation_is_taken_with_them_named() {
    let mut vmi = fixture("vmi.json");
    let spec = vmi["spec"].as_object_mut().unwrap();
    spec.remove("readinessProbe");
    spec.remove("livenessProbe");
    vmi["metadata"]["annotations"][crate::config::PROBES_ANNOTATION] = json!(NAMED_CHECKS);
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi);
    assert_eq!(
        answer.warnings(),
        [
            "virt-probe-gateway: its readiness and startup probe will be answered by the gateway on port 8190, through libvirt"
        ]
    );
    // An invalid annotation: decided against, and said why.
    vmi["metadata"]["annotations"][crate::config::PROBES_ANNOTATION] =
        json!("readinessProbe:\n  checks: []\n");
    let answer = answer_of("kubevirt.io", "VirtualMachineInstance", "CREATE", &vmi);
    let written = answer.patched["metadata"]["annotations"][DECISION]
        .as_str()
        .unwrap();
    assert!(written.contains(r#""inject":false"#), "{written}");
    assert!(
        written.contains(
            "annotation is not valid: readinessProbe.checks: must list at least one check"
        ),
        "{written}"
    );
}

#[test]
fn the_gateway_follows_its_pods_annotations_through_a_downward_api_volume() {
    let answer = pod_answer(&fixture("launcher-pod.json"));
    let gateway = gateway_of(&answer.patched);
    let path = gateway["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "PROBE_GATEWAY_POD_ANNOTATIONS")
        .map(|e| e["value"].as_str().unwrap())
        .unwrap();
    let mount = gateway["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap();
    let volume = answer.patched["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let item = &volume["downwardAPI"]["items"][0];
    assert_eq!(item["fieldRef"]["fieldPath"], "metadata.annotations");
    assert!(path.ends_with(item["path"].as_str().unwrap()));
    // A pod with a volume of that name already: left alone, and said why.
    let mut pod = fixture("launcher-pod.json");
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "probe-gateway-podinfo", "emptyDir": {}}));
    let answer = pod_answer(&pod);
    assert_eq!(answer.outcome, Outcome::Skipped);
    assert!(answer.warnings()[0].contains("probe-gateway-podinfo"));
}
