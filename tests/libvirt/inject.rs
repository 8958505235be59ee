//! The injector end to end, short of a cluster: the webhook (over HTTPS) patches a
//! KubeVirt-shaped launcher pod whose VMI is a domain of the real libvirt daemon; the
//! gateway container of the patched pod is then run as it says (its binary, arguments,
//! environment and user; only its listen address and the daemon's socket path are this
//! machine's), without the session's HOME or XDG directories, as in a container with a
//! read-only root; and kubelet's rewritten probes, by the path and port the patch gave
//! them, answer through libvirt.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::{LibvirtGateway, SECOND, libvirt_binary};
use crate::session::session_with_domain;
use crate::volume::{AtomicVolume, downward_api_annotations};
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

/// `pod` reviewed by a webhook over HTTPS: the patched pod, and its gateway container.
async fn injected(pod: &Value) -> (Value, Value) {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(certs.path(), &ca.serving());
    let injector = Injector::start(&ca, &cert, &key, &["--image", IMAGE]);
    let reply = injector
        .https("POST", "/mutate", &review_of("", "Pod", "CREATE", pod))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let patched = apply_patch(pod, &reply.json()["response"]);
    let container = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "probe-gateway")
        .cloned()
        .expect("the injected container");
    (patched, container)
}

/// The container's environment, as (name, value).
fn environment(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_injected_gateway_run_as_its_container_says_answers_kubelets_probes_through_libvirt() {
    let test =
        "an_injected_gateway_run_as_its_container_says_answers_kubelets_probes_through_libvirt";
    let Some((libvirt, mut domain)) = session_with_domain(test, "default_vm-inject").await else {
        return;
    };

    let pod = launcher_pod_for("vm-inject");
    let (patched, container) = injected(&pod).await;

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
    let env = environment(&container);
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

    // kubelet's probes, as the patched compute container has them, fetched as kubelet
    // fetches them.
    let compute = &patched["spec"]["containers"][0];
    let readiness = KubeletProbe::of(&compute["readinessProbe"]);
    let liveness = KubeletProbe::of(&compute["livenessProbe"]);
    assert_eq!(
        (
            readiness.port,
            liveness.port,
            readiness.timeout,
            liveness.timeout
        ),
        (8190, 8190, 6 * SECOND, 2 * SECOND),
        "the rewritten probes keep KubeVirt's timeouts (the check's + 1)"
    );
    let address = gateway.address;
    liveness.until(address, 200, 60 * SECOND).await;
    let (status, body) = readiness.fetch(address).await;
    assert_eq!((status, body.as_str()), (503, "exec: exit code 1\n"));
    domain.control.sh("echo ok > /tmp/healthy.txt").await;
    readiness.until(address, 200, 10 * SECOND).await;
    // The checked file removed in the guest: not ready; put back: ready again.
    domain.control.sh("rm /tmp/healthy.txt").await;
    readiness.until(address, 503, 10 * SECOND).await;
    domain.control.sh("echo ok > /tmp/healthy.txt").await;
    readiness.until(address, 200, 10 * SECOND).await;
    // Suspended: alive, not ready, naming the state (docs/libvirt.md's table). Within the
    // settings' minIntervalSeconds (1 s) the result before may be answered again.
    libvirt.virsh_ok(&["suspend", &domain.name]);
    let body = readiness.until(address, 503, 10 * SECOND).await;
    assert_eq!(body, "domain paused (user)\n");
    let (status, body) = liveness.fetch(address).await;
    assert_eq!(status, 200, "{body}");
    libvirt.virsh_ok(&["resume", &domain.name]);
    readiness.until(address, 200, 10 * SECOND).await;
    liveness.until(address, 200, 10 * SECOND).await;

    // The gateway container exits; kubelet restarts it (a native sidecar). From its start
    // to its first passing liveness answer, against what compute's liveness allows.
    let logs_clean = gateway.raw_lines().is_empty();
    drop(gateway);
    let restarted = Instant::now();
    let gateway = LibvirtGateway::spawn_without(&libvirt, &libvirt_binary(), &[], &run_env, &unset);
    liveness.until(gateway.address, 200, 30 * SECOND).await;
    let back = restarted.elapsed();
    // Readiness has no grace: its first pass is a check through libvirt to the guest.
    readiness.until(gateway.address, 200, 30 * SECOND).await;
    let checked = restarted.elapsed();
    let allowed = liveness.period * liveness.failure_threshold;
    eprintln!(
        "gateway restart: first passing liveness answer {:.0} ms after its start, first check through libvirt passing {:.0} ms after; compute's liveness allows {} s ({} failures x {} s)",
        back.as_secs_f64() * 1000.0,
        checked.as_secs_f64() * 1000.0,
        allowed.as_secs(),
        liveness.failure_threshold,
        liveness.period.as_secs()
    );
    assert!(checked < allowed, "{checked:?} against {allowed:?}");
    assert!(back < allowed, "{back:?} against {allowed:?}");
    assert!(logs_clean);

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

/// A VM whose template carries the gateway's annotation (three named checks, a startup
/// probe) through the injector: the patched pod's gateway, run as its container says with
/// its downward API volume of the pod's annotations (laid out and updated as kubelet does),
/// answers kubelet's startup, readiness and liveness probes through libvirt, and a
/// maintenance annotation arriving in that volume pauses them.
#[tokio::test]
async fn an_injected_gateway_runs_the_annotations_named_checks_startup_and_pause() {
    let test = "an_injected_gateway_runs_the_annotations_named_checks_startup_and_pause";
    let Some((libvirt, mut domain)) = session_with_domain(test, "default_vm-named").await else {
        return;
    };
    let mut pod = launcher_pod_for("vm-named");
    let annotation = "checks:\n  agent: {guestAgentPing: {}, timeoutSeconds: 2}\n  app: {exec: {command: [test, -e, /tmp/app-up]}, timeoutSeconds: 2}\n  disk: {exec: {command: [test, -w, /tmp]}, timeoutSeconds: 2}\nreadinessProbe:\n  checks: [agent, app, disk]\n  periodSeconds: 2\nstartupProbe:\n  checks: [app]\n  periodSeconds: 1\n  failureThreshold: 600\n";
    pod["metadata"]["annotations"]["probe-gateway.kubevirt.io/probes"] = json!(annotation);
    let (patched, container) = injected(&pod).await;
    // The pod's annotations as kubelet writes the downward API volume the patch added,
    // where the container's environment says it is mounted.
    let mut env = environment(&container);
    let annotations_of = |extra: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = vec![
            ("kubevirt.io/domain", "vm-named"),
            ("probe-gateway.kubevirt.io/probes", annotation),
        ];
        all.extend_from_slice(extra);
        downward_api_annotations(&all)
    };
    let mut podinfo = AtomicVolume::new_at(
        &libvirt.dir().join("podinfo"),
        "annotations",
        &annotations_of(&[]),
    );
    for (name, value) in &mut env {
        if name == "PROBE_GATEWAY_POD_ANNOTATIONS" {
            assert_eq!(value, "/etc/probe-gateway/pod/annotations");
            *value = podinfo.path().display().to_string();
        }
    }
    let uri = libvirt.uri();
    let mut run_env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_env.push(("PROBE_GATEWAY_LIBVIRT_URI", &uri));
    run_env.push(("HOME", "/"));
    let unset = ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"];
    let gateway = LibvirtGateway::spawn_without(&libvirt, &libvirt_binary(), &[], &run_env, &unset);
    let address = gateway.address;

    let compute = &patched["spec"]["containers"][0];
    let startup = KubeletProbe::of(&compute["startupProbe"]);
    let readiness = KubeletProbe::of(&compute["readinessProbe"]);
    let liveness = KubeletProbe::of(&compute["livenessProbe"]);
    assert_eq!(
        (startup.path.as_str(), readiness.timeout, readiness.period),
        ("/started", 3 * SECOND, 2 * SECOND),
        "the startup probe, and readiness on the annotation's schedule"
    );
    // Starting: the app is not up in the guest.
    let body = startup.until(address, 503, 30 * SECOND).await;
    assert!(body.starts_with("starting: "), "{body}");
    liveness.until(address, 200, 30 * SECOND).await;
    domain.control.sh("touch /tmp/app-up").await;
    startup.until(address, 200, 10 * SECOND).await;
    readiness.until(address, 200, 10 * SECOND).await;
    domain.control.sh("rm /tmp/app-up").await;
    let body = readiness.until(address, 503, 10 * SECOND).await;
    assert_eq!(body, "app: exec: exit code 1\n");
    // The maintenance annotation arrives by kubelet's swap of the volume.
    podinfo.update(&annotations_of(&[(
        "probe-gateway.kubevirt.io/maintenance",
        "updates",
    )]));
    let status = readiness
        .until_body(address, "paused for maintenance (updates)\n", 10 * SECOND)
        .await;
    assert_eq!(status, 503);
    assert_eq!(liveness.fetch(address).await, (200, "ok\n".to_string()));
    podinfo.update(&annotations_of(&[]));
    let status = readiness
        .until_body(address, "app: exec: exit code 1\n", 10 * SECOND)
        .await;
    assert_eq!(status, 503, "the checks run again");
    assert_eq!(gateway.raw_lines(), Vec::<String>::new());
}

/// A probe of the patched compute container, fetched as kubelet fetches it: a new
/// connection per probe, `User-Agent: kube-probe/<major>.<minor>`, `Accept: */*`, the
/// probe's `timeoutSeconds` over the whole request, at most 10 KiB of body read.
struct KubeletProbe {
    path: String,
    port: u16,
    timeout: Duration,
    period: Duration,
    failure_threshold: u32,
}

impl KubeletProbe {
    fn of(probe: &Value) -> KubeletProbe {
        let seconds = |field: &str| Duration::from_secs(probe[field].as_u64().unwrap());
        KubeletProbe {
            path: probe["httpGet"]["path"].as_str().unwrap().to_string(),
            port: u16::try_from(probe["httpGet"]["port"].as_u64().unwrap()).unwrap(),
            timeout: seconds("timeoutSeconds"),
            period: seconds("periodSeconds"),
            failure_threshold: u32::try_from(probe["failureThreshold"].as_u64().unwrap()).unwrap(),
        }
    }

    /// The status and body, or 0 and the error (a failure to kubelet).
    async fn fetch(&self, address: SocketAddr) -> (u16, String) {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(self.timeout)
            .build()
            .unwrap();
        // The gateway's port here is the test's; the pod's is `self.port`.
        let sent = client
            .get(format!("http://{address}{}", self.path))
            .header("User-Agent", "kube-probe/1.33")
            .header("Accept", "*/*")
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                let body = &body[..body.len().min(10 * 1024)];
                (status, String::from_utf8_lossy(body).into_owned())
            }
            Err(error) => (0, error.to_string()),
        }
    }

    /// Fetches until the body is `body`, within `limit`; the status then.
    async fn until_body(&self, address: SocketAddr, body: &str, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let (status, got) = self.fetch(address).await;
            if got == body {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still {status} {got:?} after {limit:?}",
                self.path
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fetches until the status is `status`, within `limit`; the body then.
    async fn until(&self, address: SocketAddr, status: u16, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let (got, body) = self.fetch(address).await;
            if got == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{} still {got} after {limit:?}: {body}",
                self.path
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
