//! The admission webhook over real HTTPS, as the apiserver calls it: reviews in and
//! patches out, the certificate renewed under it, what it refuses and how, its plain port,
//! its settings' errors and its shutdown. (What each object gets is specified in the
//! unit tests of src/inject/; here is what only the running process can show.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::eventually;
use crate::support::gateway::BINARY;
use crate::support::webhook::{
    IMAGE, Injector, TestCa, apply_patch, fixture, review_of, write_secret_volume,
};

fn started(args: &[&str]) -> (TestCa, tempfile::TempDir, Injector) {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(dir.path(), &ca.serving());
    let mut all = vec!["--image", IMAGE];
    all.extend_from_slice(args);
    let injector = Injector::start(&ca, &cert, &key, &all);
    (ca, dir, injector)
}

#[tokio::test]
async fn a_launcher_pod_review_over_https_gets_its_patch() {
    let (_ca, _dir, injector) = started(&[]);
    let pod = fixture("launcher-pod.json");
    let reply = injector
        .https("POST", "/mutate", &review_of("", "Pod", "CREATE", &pod))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let review = reply.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(
        review["response"]["uid"],
        "3f1a9c6e-2b7d-4e8f-9a0b-1c2d3e4f5a6b"
    );
    assert_eq!(review["response"]["allowed"], true);
    let patched = apply_patch(&pod, &review["response"]);
    let gateway = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "probe-gateway")
        .expect("the gateway container");
    assert_eq!(gateway["image"], IMAGE);
    assert_eq!(
        patched["spec"]["containers"][0]["livenessProbe"]["httpGet"],
        json!({"path": "/live", "port": 8190, "scheme": "HTTP"})
    );
    // Logged once, counted once.
    let reviews = injector.events("review");
    assert_eq!(reviews.len(), 1, "{reviews:#?}");
    assert_eq!(reviews[0]["outcome"], "patched");
    assert_eq!(reviews[0]["object"], "default/virt-launcher-vm-fedora-*");
    let series =
        "probe_gateway_inject_reviews_total{kind=\"Pod\",operation=\"CREATE\",outcome=\"patched\"}";
    assert_eq!(injector.metric(series).await, 1.0);

    // The VMI review on the same connection kind: its decision, and the warning kubectl prints.
    let (response, decided) = injector
        .review(
            "kubevirt.io",
            "VirtualMachineInstance",
            "CREATE",
            &fixture("vmi.json"),
        )
        .await;
    assert!(
        decided["metadata"]["annotations"]["probe-gateway.kubevirt.io/decision"]
            .as_str()
            .unwrap()
            .contains(r#""inject":true"#)
    );
    assert_eq!(response["warnings"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.serving();
    let (cert, key) = write_secret_volume(dir.path(), &first);
    let injector = Injector::start(&ca, &cert, &key, &["--image", IMAGE]);
    let review = review_of("", "Pod", "CREATE", &fixture("launcher-pod.json"));
    assert_eq!(
        injector.https("POST", "/mutate", &review).await.served,
        first.der
    );

    // cert-manager renews; kubelet swaps the Secret volume's ..data link.
    let second = ca.serving();
    write_secret_volume(dir.path(), &second);
    eventually(
        "the renewed certificate served",
        Duration::from_secs(10),
        || async { injector.https("POST", "/mutate", &review).await.served == second.der },
    )
    .await;
    let reply = injector.https("POST", "/mutate", &review).await;
    assert_eq!(reply.status, 200);
    let reloads = injector
        .metric("probe_gateway_inject_certificate_reloads_total{result=\"ok\"}")
        .await;
    assert!(reloads >= 1.0, "{reloads}");
    assert_eq!(
        injector
            .metric("probe_gateway_inject_certificate_reloads_total{result=\"rejected\"}")
            .await,
        0.0
    );

    // A renewal that cannot be read: the certificate in force stays.
    let broken = crate::support::webhook::ServingCert {
        cert_pem: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into(),
        key_pem: second.key_pem.clone(),
        der: Vec::new(),
    };
    write_secret_volume(dir.path(), &broken);
    eventually(
        "the broken renewal rejected",
        Duration::from_secs(10),
        || async {
            injector
                .metric("probe_gateway_inject_certificate_reloads_total{result=\"rejected\"}")
                .await
                >= 1.0
        },
    )
    .await;
    let reply = injector.https("POST", "/mutate", &review).await;
    assert_eq!((reply.status, reply.served), (200, second.der));
    let warnings =
        injector.events("the changed certificate cannot be read; the one in force stays");
    assert!(
        warnings.iter().any(|w| w["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--tls-cert")),
        "{warnings:#?}"
    );
}

#[tokio::test]
async fn what_is_not_a_review_gets_a_clear_refusal_and_the_webhook_keeps_serving() {
    let (_ca, _dir, injector) = started(&[]);
    let reply = injector
        .https("POST", "/mutate", b"{\"kind\": \"Pod\"")
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().starts_with("the body is not JSON: "),
        "{}",
        reply.text()
    );
    let reply = injector
        .https(
            "POST",
            "/mutate",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .text()
            .contains("this webhook serves admission.k8s.io/v1 only")
    );
    // Empty, and cut short: the apiserver never sends these, but nothing breaks.
    let reply = injector.https("POST", "/mutate", b"").await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().starts_with("the body is not JSON: EOF"),
        "{}",
        reply.text()
    );
    let whole = review_of("", "Pod", "CREATE", &fixture("launcher-pod.json"));
    let reply = injector
        .https("POST", "/mutate", &whole[..whole.len() / 2])
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().starts_with("the body is not JSON: "),
        "{}",
        reply.text()
    );
    assert_eq!(injector.https("GET", "/mutate", b"").await.status, 405);
    assert_eq!(injector.https("POST", "/validate", b"{}").await.status, 404);
    // Over the bound: refused unread.
    let huge = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(injector.https("POST", "/mutate", &huge).await.status, 413);
    // Plain HTTP on the TLS port: no handshake, connection dropped; still serving.
    let plain = reqwest::Client::new()
        .post(format!("http://{}/mutate", injector.address))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let reply = injector
        .https(
            "POST",
            "/mutate",
            &review_of("", "Pod", "CREATE", &fixture("launcher-pod.json")),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        injector
            .metric("probe_gateway_inject_bad_requests_total")
            .await,
        4.0
    );
}

#[tokio::test]
async fn health_and_metrics_are_on_the_plain_port_only() {
    let (_ca, _dir, injector) = started(&[]);
    assert_eq!(injector.plain("/healthz").await, (200, "ok\n".to_string()));
    let (status, metrics) = injector.plain("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("probe_gateway_inject_review_duration_seconds"),
        "{metrics}"
    );
    assert_eq!(injector.plain("/mutate").await.0, 404);
    assert_eq!(injector.https("GET", "/healthz", b"").await.status, 404);
}

#[tokio::test]
async fn settings_from_a_file_and_flags_reach_the_patch() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("inject.yaml");
    std::fs::write(
        &settings,
        format!("image: {IMAGE}\nport: 9000\nimagePullSecrets: [regcred]\nresources:\n  requests: {{cpu: 10m, memory: 40Mi}}\n  limits: {{cpu: 200m, memory: 80Mi}}\n"),
    )
    .unwrap();
    let ca = TestCa::new();
    let (cert, key) = write_secret_volume(dir.path(), &ca.serving());
    let injector = Injector::start(
        &ca,
        &cert,
        &key,
        &[
            "--config",
            settings.to_str().unwrap(),
            "--port",
            "9100",
            "--limits-memory",
            "96Mi",
        ],
    );
    let mut pod = fixture("launcher-pod.json");
    // The port the VMI was decided for wins over the setting.
    pod["metadata"]["annotations"]["probe-gateway.kubevirt.io/decision"] =
        json!(r#"{"v":1,"inject":true,"port":9100,"reason":"ok"}"#);
    let reply = injector
        .https("POST", "/mutate", &review_of("", "Pod", "CREATE", &pod))
        .await;
    let patched = apply_patch(&pod, &reply.json()["response"]);
    let gateway = &patched["spec"]["initContainers"][2];
    assert_eq!(gateway["ports"][0]["containerPort"], 9100);
    assert_eq!(
        gateway["resources"]["limits"],
        json!({"cpu": "200m", "memory": "96Mi"})
    );
    assert_eq!(
        patched["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    let (_, decided) = injector
        .review(
            "kubevirt.io",
            "VirtualMachineInstance",
            "CREATE",
            &fixture("vmi.json"),
        )
        .await;
    let decision: Value = serde_json::from_str(
        decided["metadata"]["annotations"]["probe-gateway.kubevirt.io/decision"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decision["port"], 9100);
}

#[test]
fn bad_settings_exit_2_naming_what_is_wrong() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_secret_volume(dir.path(), &ca.serving());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let bad_settings = dir.path().join("bad.yaml");
    std::fs::write(&bad_settings, "image: gw:latest\nport: 0\nresources: {}\n").unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(BINARY)
            .arg("inject")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let cases: [(Vec<&str>, &[&str]); 5] = [
        (
            vec!["--tls-cert", &cert, "--tls-key", &key],
            &["image: is required"],
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--image",
                "gw:1",
                "--image-pull-secret",
                "Bad_Name",
            ],
            &[
                "--image: must name the image by digest",
                "--image-pull-secret: \"Bad_Name\" is not a Kubernetes object name",
            ],
        ),
        (
            vec![
                "--tls-cert",
                "/nonexistent/tls.crt",
                "--tls-key",
                &key,
                "--image",
                IMAGE,
            ],
            &["--tls-cert /nonexistent/tls.crt: "],
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key, "--image", IMAGE],
            &["--tls-cert ", "holds no PEM CERTIFICATE"],
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--config",
                bad_settings.to_str().unwrap(),
            ],
            &[
                "image: must name the image by digest",
                "port: must be at least 1",
                "resources.requests: is required",
                "resources.limits: is required",
            ],
        ),
    ];
    for (args, says) in cases {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        for said in says {
            assert!(stderr.contains(said), "{args:?}: {said:?} not in {stderr}");
        }
    }
}

#[tokio::test]
async fn sigterm_ends_the_webhook_with_exit_0() {
    let (_ca, _dir, mut injector) = started(&[]);
    assert_eq!(injector.plain("/healthz").await.0, 200);
    assert!(injector.terminate().success());
    assert_eq!(injector.events("stopped").len(), 1);
}

/// The warnings the injector answers deploy/injector's example VM `file` with, as `kubectl
/// apply` sends it; a VM is never changed.
async fn warnings_for_example(file: &str) -> Value {
    let (_ca, _dir, injector) = started(&[]);
    let path = crate::support::hook::repo()
        .join("deploy/injector")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut vm: Value = serde_saphyr::from_str(&text).unwrap();
    vm["metadata"]["namespace"] = json!("default");
    let reply = injector
        .https(
            "POST",
            "/mutate",
            &review_of("kubevirt.io", "VirtualMachine", "CREATE", &vm),
        )
        .await;
    let response = &reply.json()["response"];
    assert!(response["patch"].is_null(), "a VM is not changed");
    response["warnings"].clone()
}

/// deploy/inject's example VM: the injector tells its owner that the gateway will answer
/// its probes.
#[tokio::test]
async fn the_zero_touch_example_vm_is_told_it_is_taken() {
    assert_eq!(
        warnings_for_example("vm-zero-touch.yaml").await,
        json!([
            "virt-probe-gateway: its readiness and liveness probe will be answered by the gateway on port 8190, through libvirt"
        ])
    );
}

/// deploy/injector's VM with named checks and a startup probe in the gateway's annotation:
/// its owner is told all three probes will be answered, and what the webhook will hand the
/// gateway reads as valid.
#[tokio::test]
async fn the_named_checks_example_vm_is_told_it_is_taken_with_its_startup_probe() {
    assert_eq!(
        warnings_for_example("vm-named-checks.yaml").await,
        json!([
            "virt-probe-gateway: its readiness, liveness and startup probe will be answered by the gateway on port 8190, through libvirt"
        ])
    );
    let path = crate::support::hook::repo().join("deploy/injector/vm-named-checks.yaml");
    let (code, stdout, stderr) = crate::support::gateway::run_cli(
        &["validate", "--config", &path.display().to_string()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("readiness: agent (guestAgentPing, timeout 1s), app (exec"),
        "{stdout}"
    );
}

/// Without cert-manager: scripts/injector-certs.sh's CA and certificate serve HTTPS that a
/// client verifies as the apiserver does (the CA as caBundle, the Service's DNS name), and
/// its caBundle patch covers every webhook of deploy/injector/injector.yaml.
#[tokio::test]
async fn the_manual_certificate_script_serves_https_the_apiserver_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let script = crate::support::hook::repo().join("scripts/injector-certs.sh");
    let run = std::process::Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "injector-certs.sh: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let injector = Injector::start_trusting(
        roots,
        "probe-gateway-inject.virt-probe-gateway.svc",
        &out.join("tls.crt"),
        &out.join("tls.key"),
        &["--image", IMAGE],
    );
    let reply = injector
        .https(
            "POST",
            "/mutate",
            &review_of("", "Pod", "CREATE", &fixture("launcher-pod.json")),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca);
    let patch: Value =
        serde_json::from_slice(&std::fs::read(out.join("cabundle-patch.json")).unwrap()).unwrap();
    let manifests =
        std::fs::read_to_string(crate::support::hook::repo().join("deploy/injector/injector.yaml"))
            .unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&manifests).unwrap();
    let configuration = objects
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let webhooks = configuration["webhooks"].as_array().unwrap().len();
    let operations = patch.as_array().unwrap();
    assert_eq!(operations.len(), webhooks, "one caBundle per webhook");
    for (i, operation) in operations.iter().enumerate() {
        assert_eq!(
            operation["path"],
            format!("/webhooks/{i}/clientConfig/caBundle")
        );
        assert_eq!(operation["value"], bundle);
    }
    let secret = std::fs::read_to_string(out.join("secret.yaml")).unwrap();
    assert!(
        secret.contains("name: probe-gateway-inject-tls"),
        "{secret}"
    );
}
