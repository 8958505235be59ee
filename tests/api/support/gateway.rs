//! The gateway binary, started per test on 127.0.0.1:0 with JSON logs captured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_virt-probe-gateway");

pub struct Gateway {
    child: Child,
    pub address: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    _config_dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Gateway {
    /// Starts the gateway with `config` (YAML) and the agent at `agent`.
    pub fn start(config: &str, agent: &Path) -> Gateway {
        Gateway::start_with(config, &["--agent", &agent.display().to_string()])
    }

    /// Starts the gateway with `config` and extra `serve` arguments.
    pub fn start_with(config: &str, args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, config).expect("write config");
        let path = path.display().to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Gateway::launch(dir, &all, &[])
    }

    /// Starts the gateway with the config file at `path` (left where it is, to be changed).
    pub fn start_file(path: &Path, args: &[&str]) -> Gateway {
        Gateway::start_file_with(path, args, true)
    }

    /// [`Gateway::start_file`] without `--listen`: the file's `listen` is in force.
    pub fn start_file_listening_as_configured(path: &Path, args: &[&str]) -> Gateway {
        Gateway::start_file_with(path, args, false)
    }

    fn start_file_with(path: &Path, args: &[&str], listen_flag: bool) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = path.display().to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        if listen_flag {
            Gateway::launch(dir, &all, &[])
        } else {
            Gateway::spawn(dir, &all, &[])
        }
    }

    /// Starts the gateway as a KubeVirt hook sidecar (no config file: the checks come from
    /// the VMI) with `hooks_dir`, as the container `hook-sidecar-0`, and extra arguments.
    pub fn start_hook(hooks_dir: &Path, args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let hooks = hooks_dir.display().to_string();
        let mut all = vec!["--kubevirt-hook", "--hooks-dir", hooks.as_str()];
        all.extend_from_slice(args);
        Gateway::launch(dir, &all, &[("CONTAINER_NAME", "hook-sidecar-0")])
    }

    /// Starts the gateway as a KubeVirt plugin sidecar on the plugin socket `socket` (no
    /// config file: the checks come from the VMI), and extra arguments.
    pub fn start_plugin(socket: &Path, args: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = socket.display().to_string();
        let mut all = vec!["--kubevirt-plugin", "--plugin-socket", socket.as_str()];
        all.extend_from_slice(args);
        Gateway::launch(dir, &all, &[])
    }

    /// Runs `serve` on 127.0.0.1:0 with `args` (and `env`) and waits until it listens.
    fn launch(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Gateway::spawn(dir, &all, env)
    }

    /// Runs `serve` with `args` (and `env`) and waits until it listens.
    fn spawn(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut child = Command::new(BINARY)
            .arg("serve")
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CONTAINER_NAME")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the gateway");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({"raw": line}));
                    if event["message"] == "listening" {
                        let _ = address_tx
                            .send(event["address"].as_str().unwrap_or_default().to_string());
                    }
                    logs.lock().unwrap().push(event);
                }
            });
        }
        let address = match address_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => address.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "the gateway did not start listening (exit {status:?}); its log: {:#?}",
                    logs.lock().unwrap()
                );
            }
        };
        Gateway {
            child,
            address,
            logs,
            _config_dir: dir,
            // Like kubelet: a new connection per request.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a request and reads the whole response.
    pub async fn request(&self, method: &str, path: &str, accept: Option<&str>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.expect("request");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        let content_type = header("content-type").unwrap_or_default();
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None).await
    }

    /// `GET path` with `Accept: application/json`, the report parsed.
    pub async fn report(&self, path: &str) -> (u16, Value) {
        let reply = self.request("GET", path, Some("application/json")).await;
        (reply.status, reply.json())
    }

    /// The value of the metric series `series` (name and labels as exposed), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.body;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("metric value"))
    }

    /// Config reloads that ended in `result` (`applied`, `unchanged`, `rejected`).
    pub async fn config_reloads(&self, result: &str) -> f64 {
        self.metric(&format!(
            "probe_gateway_config_reloads_total{{result=\"{result}\"}}"
        ))
        .await
    }

    /// Waits until exactly `count` config reloads have ended in `result`.
    pub async fn await_config_reloads(&self, result: &str, count: f64) {
        let what = format!("{count} config reloads {result}");
        crate::support::eventually(&what, Duration::from_secs(5), || async {
            self.config_reloads(result).await == count
        })
        .await;
    }

    /// Log events so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// The gateway's peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("gateway /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the gateway");
    }

    /// Stops the gateway with SIGTERM (it closes the agent connection gracefully) and
    /// asserts a clean exit.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "the gateway exited with {status}");
    }

    /// Waits for the gateway to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env_remove("PROBE_GATEWAY_CONFIG")
        .env_remove("PROBE_GATEWAY_AGENT")
        .envs(env.iter().copied())
        .output()
        .expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
