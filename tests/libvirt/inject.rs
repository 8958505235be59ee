//! The injector end to end, short of a cluster: the webhook (over HTTPS) patches a
//! KubeVirt-shaped launcher pod whose VMI is a domain of the real libvirt daemon; the
//! gateway container of the patched pod is then run as it says (its binary, arguments,
//! environment and user; only its listen address and the daemon's socket path are this
//! machine's), without the session's HOME or XDG directories, as in a container with a
//! read-only root; and kubelet's rewritten probes, by the path and port the patch gave
//! them, answer through libvirt.

use serde_json::{Value, json};

use crate::gateway::{LibvirtGateway, SECOND, libvirt_binary};
use crate::session::session_with_domain;
use crate::webhook::{
    IMAGE, Injector, TestCa, apply_patch, fixture, review_of, write_secret_volume,
};

/// The launcher pod fixture, for VMI `vmi` of namespace `default`.
fn launcher_pod_for(vmi: &str) -> Value {
    let mut pod = fixture("launcher-pod.json");
    pod["metadata"]["annotations"]["kubevirt.io/domain"] = json!(vmi);
    for probe in ["readinessProbe", "livenessProbe"] {
        pod["spec"]["containers"][0][probe]["exec"]["command"][2] = json!(format!("default_{vmi}"));
    }
    pod
}

#[tokio::test]
async fn an_injected_gateway_run_as_its_container_says_answers_kubelets_probes_through_libvirt() {
    let test =
        "an_injected_gateway_run_as_its_container_says_answers_kubelets_probes_through_libvirt";
    let Some((libvirt, mut domain)) = session_with_domain(test, "default_vm-inject").await else {
        return;
    };

    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(certs.path(), &ca.serving());
    let injector = Injector::start(&ca, &cert, &key, &["--image", IMAGE]);
    let pod = launcher_pod_for("vm-inject");
    let reply = injector
        .https("POST", "/mutate", &review_of("", "Pod", "CREATE", &pod))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let patched = apply_patch(&pod, &reply.json()["response"]);
    let container = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "probe-gateway")
        .cloned()
        .expect("the injected container");

    // The container as the patch wrote it.
    assert_eq!(
        container["command"],
        json!(["/usr/local/bin/virt-probe-gateway-libvirt"])
    );
    assert_eq!(
        container["args"],
        json!(["serve", "--listen", "[::]:8190", "--log-format", "json"])
    );
    assert_eq!(container["securityContext"]["runAsUser"], 107);
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Run so: its environment; the daemon's socket is where this session put it (in the
    // pod, the default: /var/run/libvirt/virtqemud-sock on the libvirt-runtime volume);
    // HOME is what a container of a user without a passwd entry gets, "/", not writable.
    let uri = libvirt.uri();
    let mut run_env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_env.push(("PROBE_GATEWAY_LIBVIRT_URI", &uri));
    run_env.push(("HOME", "/"));
    let unset = ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"];
    let gateway = LibvirtGateway::spawn_without(&libvirt, &libvirt_binary(), &[], &run_env, &unset);

    // kubelet's probes, as the patched compute container has them.
    let compute = &patched["spec"]["containers"][0];
    let path = |probe: &str| {
        compute[probe]["httpGet"]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(compute["livenessProbe"]["httpGet"]["port"], 8190);
    let live = gateway
        .await_status(&path("livenessProbe"), 200, 60 * SECOND)
        .await;
    assert_eq!(live["result"], "success", "{live}");
    let (status, ready, _) = gateway.report(&path("readinessProbe")).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["reason"], "exec: exit code 1", "{ready}");
    domain.control.sh("echo ok > /tmp/healthy.txt").await;
    let ready = gateway
        .await_status(&path("readinessProbe"), 200, 10 * SECOND)
        .await;
    assert_eq!(ready["result"], "success", "{ready}");

    // `kubectl exec -c probe-gateway -- virt-probe-gateway-libvirt check liveness`: the
    // container's own config, from its environment.
    let binary = libvirt.reachable_copy(&libvirt_binary());
    let mut check = libvirt.command(binary);
    for name in unset {
        check.env_remove(name);
    }
    let output = check
        .args(["check", "liveness"])
        .envs(run_env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "check liveness: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("liveness: ok"));
    assert_eq!(gateway.raw_lines(), Vec::<String>::new());
}
