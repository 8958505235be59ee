//! The admission webhook (`virt-probe-gateway inject`) as the apiserver reaches it: a CA
//! and serving certificates made at test time (rcgen), the binary started per test, and
//! an HTTPS client that trusts that CA only and says which certificate it was served.
//! Shared with the libvirt tests (which include this file): it depends on nothing else of
//! the API tests' support.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The default binary (the webhook does not link libvirt).
const BINARY: &str = env!("CARGO_BIN_EXE_virt-probe-gateway");

/// A digest-pinned image name, as the injector requires.
pub const IMAGE: &str = "registry.example/virt-probe-gateway@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A test CA that issues serving certificates for `localhost`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its key, as PEM, and the certificate's DER.
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// A new certificate for `localhost` and 127.0.0.1, with a key of its own.
    pub fn serving(&self) -> ServingCert {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }
}

/// Writes `cert` as a Secret volume holds it: `tls.crt` and `tls.key` links to `..data/`,
/// `..data` a link to a timestamped directory, swapped by rename (kubelet's atomic
/// writer). Returns the paths the webhook is given.
pub fn write_secret_volume(dir: &Path, cert: &ServingCert) -> (PathBuf, PathBuf) {
    let stamp = format!("..{}", fastrand_suffix());
    let data = dir.join(&stamp);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), &cert.key_pem).unwrap();
    let next = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(&stamp, &next).unwrap();
    std::fs::rename(&next, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    (dir.join("tls.crt"), dir.join("tls.key"))
}

fn fastrand_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!(
        "{:x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

/// A response, and the certificate the server presented.
#[derive(Debug)]
pub struct HttpsReply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    pub served: Vec<u8>,
}

impl HttpsReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The webhook process.
pub struct Injector {
    child: Child,
    pub address: SocketAddr,
    pub metrics_address: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    roots: Arc<rustls::RootCertStore>,
    /// The name the client asks for and verifies (the Service's DNS name, in a cluster).
    server_name: String,
}

impl Injector {
    /// Starts `inject` with the certificate files given and `args`; waits until it listens.
    /// Its client trusts `ca` and verifies `localhost`.
    pub fn start(ca: &TestCa, cert: &Path, key: &Path, args: &[&str]) -> Injector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der()).unwrap();
        Injector::start_trusting(roots, "localhost", cert, key, args)
    }

    /// [`Injector::start`] with a client that trusts `roots` and verifies `server_name`.
    pub fn start_trusting(
        roots: rustls::RootCertStore,
        server_name: &str,
        cert: &Path,
        key: &Path,
        args: &[&str],
    ) -> Injector {
        let mut child = Command::new(BINARY)
            .arg("inject")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the webhook");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let event: Value =
                        serde_json::from_str(&line).unwrap_or_else(|_| json!({"raw": line}));
                    if event["message"] == "listening" {
                        let _ = tx.send((
                            event["address"].as_str().unwrap_or_default().to_string(),
                            event["metrics_address"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                        ));
                    }
                    logs.lock().unwrap().push(event);
                }
            });
        }
        let (address, metrics_address) =
            rx.recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!(
                        "the webhook did not listen; log: {:#?}",
                        logs.lock().unwrap()
                    )
                });
        Injector {
            child,
            address: address.parse().unwrap(),
            metrics_address: metrics_address.parse().unwrap(),
            logs,
            roots: Arc::new(roots),
            server_name: server_name.to_string(),
        }
    }

    /// `METHOD path` over HTTPS with `body`, on a new connection (as the apiserver may).
    pub async fn https(&self, method: &str, path: &str, body: &[u8]) -> HttpsReply {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(Arc::clone(&self.roots))
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from(self.server_name.clone()).unwrap(), tcp)
            .await
            .expect("TLS handshake with the webhook");
        let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        // A body refused unread (413) may end the connection before all of it is written.
        let _ = tls.write_all(body).await;
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&response)));
        let headers = String::from_utf8_lossy(&response[..split]).into_owned();
        let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = response[split + 4..].to_vec();
        if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        HttpsReply {
            status,
            headers,
            body,
            served,
        }
    }

    /// Reviews `object` over HTTPS: the response, and `object` with its patch applied.
    pub async fn review(
        &self,
        group: &str,
        kind: &str,
        operation: &str,
        object: &Value,
    ) -> (Value, Value) {
        let reply = self
            .https(
                "POST",
                "/mutate",
                &review_of(group, kind, operation, object),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let response = reply.json()["response"].clone();
        let patched = apply_patch(object, &response);
        (response, patched)
    }

    /// `GET path` on the plain port: status and body.
    pub async fn plain(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.metrics_address))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The value of the metric series `series` (name with labels) on the plain port.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.plain("/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// The log events whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["message"] == message)
            .cloned()
            .collect()
    }

    /// Sends SIGTERM and waits for the exit status (within 10 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the webhook did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the webhook's log:");
            for event in self.logs.lock().unwrap().iter() {
                eprintln!("{event}");
            }
        }
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

/// An AdmissionReview of `object` (kind `group`/`kind`, in namespace `default`): the
/// one of tests/inject/fixtures/review.json, as the apiserver sends it.
pub fn review_of(group: &str, kind: &str, operation: &str, object: &Value) -> Vec<u8> {
    let resource = match kind {
        "Pod" => "pods",
        "VirtualMachine" => "virtualmachines",
        _ => "virtualmachineinstances",
    };
    let mut review = fixture("review.json");
    review["request"]["uid"] = json!("3f1a9c6e-2b7d-4e8f-9a0b-1c2d3e4f5a6b");
    review["request"]["kind"] = json!({"group": group, "version": "v1", "kind": kind});
    review["request"]["resource"] = json!({"group": group, "version": "v1", "resource": resource});
    review["request"]["requestKind"] = review["request"]["kind"].clone();
    review["request"]["requestResource"] = review["request"]["resource"].clone();
    review["request"]["operation"] = json!(operation);
    review["request"]["object"] = object.clone();
    serde_json::to_vec(&review).unwrap()
}

/// `object` with the JSON Patch of `response` (base64, as the apiserver reads it) applied.
pub fn apply_patch(object: &Value, response: &Value) -> Value {
    use base64::Engine as _;
    let mut patched = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    patched
}

/// A fixture of tests/inject/fixtures/.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/inject/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}
