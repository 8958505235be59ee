//! The admission webhook (`virt-probe-gateway inject`): AdmissionReviews of a realistic
//! launcher pod (tests/inject/fixtures/kubevirt/pod-seed.json, as virt-controller renders
//! it, about 11 KB of JSON) over one kept-alive HTTPS connection, as the apiserver sends
//! them, each timed; and the webhook's memory after a warm-up and after all of them. The
//! certificate is scripts/injector-certs.sh's (openssl), the client rustls, verifying it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::{cpu_ns, free_address};
use crate::stats::{Samples, ms, us};
use crate::table;

const IMAGE: &str = "registry.example/virt-probe-gateway@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SERVER_NAME: &str = "probe-gateway-inject.virt-probe-gateway.svc";

/// What the injector phase measured.
pub struct Results {
    review_bytes: usize,
    reviews: Samples,
    cpu_per_review_ns: f64,
    warm_kib: (u64, u64),
    after_kib: (u64, u64),
    leak_reviews: usize,
}

struct Webhook {
    child: Child,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// One kept-alive HTTPS connection, answering one review at a time.
struct Connection {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Connection {
    fn open(address: std::net::SocketAddr, ca_pem: &[u8]) -> Connection {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.expect("the CA")).expect("a root");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a name");
        let client = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
        let tcp = TcpStream::connect(address).expect("connect to the webhook");
        tcp.set_nodelay(true).expect("nodelay");
        Connection {
            tls: rustls::StreamOwned::new(client, tcp),
        }
    }

    /// POSTs `body` to /mutate; the response's status and body.
    fn review(&mut self, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "POST /mutate HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.tls.write_all(head.as_bytes()).expect("write");
        self.tls.write_all(body).expect("write");
        self.tls.flush().expect("flush");
        let mut reader = BufReader::new(&mut self.tls);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a length");
            }
        }
        let mut response = vec![0; length];
        reader.read_exact(&mut response).expect("body");
        (status, response)
    }
}

/// Runs the phase: `reviews` timed reviews after a warm-up, and the memory around them.
pub fn run(binary: &Path, repo: &Path, reviews: usize) -> Results {
    let dir = tempfile::tempdir().expect("a temp dir");
    let certs = dir.path().join("certs");
    let made = Command::new("bash")
        .arg(repo.join("scripts/injector-certs.sh"))
        .arg(&certs)
        .stdout(Stdio::null())
        .status()
        .expect("run scripts/injector-certs.sh");
    assert!(made.success(), "scripts/injector-certs.sh failed");
    let (address, metrics) = (free_address(), free_address());
    let child = Command::new(binary)
        .arg("inject")
        .arg("--listen")
        .arg(address.to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .args(["--image", IMAGE])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the webhook");
    let webhook = Webhook { child };
    let pid = webhook.child.id();
    let started = Instant::now();
    while TcpStream::connect(address).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the webhook did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut pod: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.join("tests/inject/fixtures/kubevirt/pod-seed.json"))
            .expect("the seed's launcher pod"),
    )
    .expect("JSON");
    // The apiserver has recorded the creator's fields by the time admission sees the pod.
    pod["metadata"]["managedFields"] = serde_json::json!([{
        "manager": "virt-controller",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-12-05T12:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": field_set(&pod),
    }]);
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f1a9c6e-2b7d-4e8f-9a0b-1c2d3e4f5a6b",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kubevirt:kubevirt-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .expect("a review");
    let ca = std::fs::read(certs.join("ca.crt")).expect("the CA");
    let mut connection = Connection::open(address, &ca);
    let (status, answer) = connection.review(&body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert!(
        String::from_utf8_lossy(&answer).contains("\"patch\""),
        "the seed's pod is patched"
    );
    let warm_up = (reviews / 10).max(100);
    for _ in 0..warm_up {
        connection.review(&body);
    }
    let kib = || (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"));
    let warm_kib = kib();
    let cpu0 = cpu_ns(pid);
    let mut samples = Samples::with_capacity(reviews);
    for _ in 0..reviews {
        let started = Instant::now();
        let (status, _) = connection.review(&body);
        samples.push(started.elapsed());
        assert_eq!(status, 200);
    }
    let cpu_per_review_ns = (cpu_ns(pid) - cpu0) as f64 / reviews as f64;
    let after_kib = kib();
    drop(webhook);
    Results {
        review_bytes: body.len(),
        reviews: samples,
        cpu_per_review_ns,
        warm_kib,
        after_kib,
        leak_reviews: reviews,
    }
}

/// The server-side-apply field set of `value`, as the apiserver records a manager's fields
/// in `managedFields` (`f:` for a field, `k:{"name":...}` for a list item with a name).
fn field_set(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    match value {
        Value::Object(map) => {
            let mut set = Map::new();
            for (key, value) in map {
                if key == "apiVersion" || key == "kind" {
                    continue;
                }
                set.insert(format!("f:{key}"), field_set(value));
            }
            if !set.is_empty() {
                set.insert(".".into(), serde_json::json!({}));
            }
            Value::Object(set)
        }
        Value::Array(items) => {
            let mut set = Map::new();
            for item in items {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    set.insert(format!("k:{{\"name\":\"{name}\"}}"), field_set(item));
                }
            }
            Value::Object(set)
        }
        _ => serde_json::json!({}),
    }
}

/// The injector's table.
pub fn tables(report: &mut String, results: &Results) {
    let r = results;
    table(
        report,
        "The injector: AdmissionReviews of a launcher pod over one kept-alive HTTPS connection",
        &["Measure", "Value"],
        1,
    );
    let _ = writeln!(
        report,
        "| review of `pod-seed.json` (the seed VM's launcher pod as virt-controller renders it, with the apiserver's managedFields) | {:.1} KB, answered with its patch |",
        r.review_bytes as f64 / 1000.0
    );
    let _ = writeln!(
        report,
        "| latency over {} reviews: p50 / p99 | {} / {} |",
        r.reviews.len(),
        ms(r.reviews.p50()),
        ms(r.reviews.p99())
    );
    let _ = writeln!(
        report,
        "| the webhook's CPU per review | {} |",
        us(Duration::from_nanos(r.cpu_per_review_ns as u64))
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let _ = writeln!(
        report,
        "| VmRSS / RssAnon after the warm-up | {} / {} |",
        mib(r.warm_kib.0),
        mib(r.warm_kib.1)
    );
    let _ = writeln!(
        report,
        "| VmRSS / RssAnon after {} more | {} ({:+} KiB) / {} ({:+} KiB) |",
        r.leak_reviews,
        mib(r.after_kib.0),
        r.after_kib.0 as i64 - r.warm_kib.0 as i64,
        mib(r.after_kib.1),
        r.after_kib.1 as i64 - r.warm_kib.1 as i64
    );
}
