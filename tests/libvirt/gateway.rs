//! The gateway's libvirt backend against the real daemon and guest of session.rs: the
//! libvirt binary (`target/libvirt/release/virt-probe-gateway`, as scripts/test.sh and the
//! image build it; `VPG_LIBVIRT_GATEWAY` overrides) runs as the daemon's user, each test
//! with a domain of its own (one at a time: .config/nextest.toml).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::chown;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::session::{Domain, LibvirtSession, libvirt_or_skip, session_with_domain};

pub const SECOND: Duration = Duration::from_secs(1);
/// What the gateway may add to a probe's `timeoutSeconds` (the bound).
pub const SLACK: Duration = Duration::from_millis(500);

/// The libvirt binary; in CI (scripts/test.sh builds it first) a missing one fails.
pub fn libvirt_binary() -> PathBuf {
    let binary = std::env::var_os("VPG_LIBVIRT_GATEWAY").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/libvirt/release/virt-probe-gateway")
        },
        PathBuf::from,
    );
    assert!(
        binary.is_file(),
        "{} is missing: build it with cargo build --release --locked --features libvirt \
         --target-dir target/libvirt (scripts/test.sh does)",
        binary.display()
    );
    binary
}

/// A gateway serving on 127.0.0.1:0 as the session's user, JSON logs kept (a line that is
/// not JSON is kept as `{"raw": LINE}`).
pub struct LibvirtGateway {
    child: Child,
    pub address: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    client: reqwest::Client,
}

impl LibvirtGateway {
    /// Starts the libvirt gateway on `config` (YAML) with `args` after it.
    pub fn start(libvirt: &LibvirtSession, config: &str, args: &[&str]) -> LibvirtGateway {
        Self::start_logging(libvirt, config, args, "info")
    }

    /// [`LibvirtGateway::start`] with `RUST_LOG=filter`.
    pub fn start_logging(
        libvirt: &LibvirtSession,
        config: &str,
        args: &[&str],
        filter: &str,
    ) -> LibvirtGateway {
        let path = libvirt
            .dir()
            .join(format!("gateway-{}.yaml", fastrand::u32(..)));
        std::fs::write(&path, config).unwrap();
        chown(&path, Some(libvirt.user().uid), Some(libvirt.user().gid)).unwrap();
        let path = path.display().to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Self::spawn(libvirt, &libvirt_binary(), &all, &[("RUST_LOG", filter)])
    }

    /// Runs `binary serve --log-format json --listen 127.0.0.1:0 ARGS` as the session's
    /// user with `env`, and waits until it listens.
    pub fn spawn(
        libvirt: &LibvirtSession,
        binary: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> LibvirtGateway {
        Self::spawn_without(libvirt, binary, args, env, &[])
    }

    /// [`LibvirtGateway::spawn`], with the variables `unset` removed from the session's
    /// environment (a container has none of the session's XDG directories).
    pub fn spawn_without(
        libvirt: &LibvirtSession,
        binary: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        unset: &[&str],
    ) -> LibvirtGateway {
        let binary = libvirt.reachable_copy(binary);
        let mut command = libvirt.command(binary);
        for name in unset {
            command.env_remove(name);
        }
        let mut child = command
            .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the libvirt gateway");
        let stderr = child.stderr.take().unwrap();
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
        let address = address_rx
            .recv_timeout(20 * SECOND)
            .unwrap_or_else(|_| {
                panic!(
                    "the gateway did not listen; log: {:#?}",
                    logs.lock().unwrap()
                )
            })
            .parse()
            .unwrap();
        LibvirtGateway {
            child,
            address,
            logs,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(30 * SECOND)
                .build()
                .unwrap(),
        }
    }

    /// GET `path` as JSON: status, report, and how long it took.
    pub async fn report(&self, path: &str) -> (u16, Value, Duration) {
        let started = Instant::now();
        let response = self
            .client
            .get(format!("http://{}{path}", self.address))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        let took = started.elapsed();
        let report = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, report, took)
    }

    /// The value of the metric series `series` (name with labels).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// The log lines that were not JSON.
    pub fn raw_lines(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| event["raw"].as_str().map(str::to_string))
            .collect()
    }

    /// The log events whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event["message"] == message)
            .cloned()
            .collect()
    }

    /// Polls `path` until it answers `status`, within `limit`; the report.
    pub async fn await_status(&self, path: &str, status: u16, limit: Duration) -> Value {
        self.await_report(path, limit, |got, _| got == status).await
    }

    /// Polls `path` until its status and report satisfy `done`, within `limit`; the report.
    pub async fn await_report(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(u16, &Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (got, report, _) = self.report(path).await;
            if done(got, &report) {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "{path} not as awaited after {limit:?}: {got} {report}; log: {:#?}",
                self.logs.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LibvirtGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let status = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- the gateway ({status:?}), its log:");
            for event in self.logs.lock().unwrap().iter() {
                eprintln!("{event}");
            }
        }
    }
}

pub fn reason(report: &Value) -> &str {
    report["reason"].as_str().unwrap_or_default()
}

/// A config for domain `domain` of `libvirt` with the given probes (YAML lines).
pub fn config(libvirt: &LibvirtSession, domain: &str, probes: &str) -> String {
    format!(
        "agent: \"libvirt:{domain}\"\nlibvirtUri: \"{}\"\nexposeOutput: true\nlivenessGraceSeconds: 0\n{probes}",
        libvirt.uri()
    )
}

/// The domain is in `state` (as the reports word it): liveness passes naming it,
/// readiness fails with it, and the metric shows `label`. How long /live took.
async fn expect_state(gateway: &LibvirtGateway, state: &str, label: &str) -> Duration {
    let (status, live, took) = gateway.report("/live").await;
    assert_eq!(status, 200, "{live}");
    assert!(reason(&live).starts_with(state), "{live}");
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!((status, reason(&ready)), (503, state), "{ready}");
    let series = format!("probe_gateway_domain_state{{state=\"{label}\"}}");
    assert_eq!(gateway.metric(&series).await, 1.0, "{series}");
    took
}

const PING_AND_TRUE: &str = "livenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 2\nreadinessProbe:\n  exec:\n    command: [\"true\"]\n  timeoutSeconds: 2\n";

/// A session, its domain, and the gateway on `probes` for that domain; None where the
/// test skips.
async fn started(test: &str, probes: &str) -> Option<(LibvirtSession, Domain, LibvirtGateway)> {
    let (libvirt, domain) = session_with_domain(test, "gw").await?;
    let gateway = LibvirtGateway::start(&libvirt, &config(&libvirt, &domain.name, probes), &[]);
    Some((libvirt, domain, gateway))
}

#[tokio::test]
async fn ping_and_exec_pass_through_libvirt() {
    let Some((_libvirt, _domain, gateway)) =
        started("ping_and_exec_pass_through_libvirt", PING_AND_TRUE).await
    else {
        return;
    };
    let live = gateway.await_status("/live", 200, 10 * SECOND).await;
    assert_eq!(live["result"], "success", "{live}");
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(
        (status, ready["result"].as_str()),
        (200, Some("success")),
        "{ready}"
    );
    assert_eq!(
        gateway
            .metric("probe_gateway_domain_state{state=\"running\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_exec_that_fails_or_is_killed_fails_with_its_exit_and_stderr() {
    let probes = "livenessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"kill -9 $$\"]\n  timeoutSeconds: 2\nreadinessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"echo 'not \\\"ready\\\"' >&2; exit 3\"]\n  timeoutSeconds: 2\n";
    let Some((_libvirt, _domain, gateway)) = started(
        "an_exec_that_fails_or_is_killed_fails_with_its_exit_and_stderr",
        probes,
    )
    .await
    else {
        return;
    };
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(reason(&ready), "exec: exit code 3", "{ready}");
    // The argument reached the guest as written (a JSON value, quotes and all).
    assert_eq!(ready["stderr"], "not \"ready\"\n", "{ready}");
    let (status, live, _) = gateway.report("/live").await;
    assert_eq!(status, 503, "{live}");
    assert_eq!(
        reason(&live),
        "exec: killed by signal 9 (SIGKILL)",
        "{live}"
    );
}

#[tokio::test]
async fn a_hanging_exec_times_out_in_bounds_and_leaves_one_guest_process() {
    let probes =
        "readinessProbe:\n  exec:\n    command: [\"sleep\", \"4242\"]\n  timeoutSeconds: 1\n";
    let test = "a_hanging_exec_times_out_in_bounds_and_leaves_one_guest_process";
    let Some((_libvirt, mut domain, gateway)) = started(test, probes).await else {
        return;
    };
    for n in 0..8 {
        let (status, ready, took) = gateway.report("/ready").await;
        assert_eq!(status, 503, "{ready}");
        assert!(took <= SECOND + SLACK, "probe {n} took {took:?}: {ready}");
        if n == 0 {
            assert_eq!(ready["result"], "timeout", "{ready}");
        } else {
            assert!(
                reason(&ready).starts_with("previous command still running (pid "),
                "{ready}"
            );
        }
    }
    let (_, count) = domain.control.sh("ps | grep 'sleep 424[2]' | wc -l").await;
    assert_eq!(count.trim(), "1", "guest processes of the probe");
}

#[tokio::test]
async fn a_suspended_domain_keeps_liveness_fails_readiness_and_resumes_at_once() {
    let Some((libvirt, domain, gateway)) = started(
        "a_suspended_domain_keeps_liveness_fails_readiness_and_resumes_at_once",
        PING_AND_TRUE,
    )
    .await
    else {
        return;
    };
    gateway.await_status("/live", 200, 10 * SECOND).await;
    libvirt.virsh_ok(&["suspend", &domain.name]);
    assert_eq!(libvirt.domstate(&domain.name), "paused (user)");
    let took = expect_state(&gateway, "domain paused (user)", "paused").await;
    assert!(took < SECOND, "libvirt refuses at once: {took:?}");
    libvirt.virsh_ok(&["resume", &domain.name]);
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(
        (status, ready["result"].as_str()),
        (200, Some("success")),
        "{ready}"
    );
    let (status, live, _) = gateway.report("/live").await;
    assert_eq!(status, 200, "{live}");
    assert!(live["reason"].is_null(), "{live}");
    assert_eq!(
        gateway
            .metric("probe_gateway_domain_state{state=\"running\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_destroyed_then_undefined_domain_keeps_liveness_and_fails_readiness() {
    let Some((libvirt, domain, gateway)) = started(
        "a_destroyed_then_undefined_domain_keeps_liveness_and_fails_readiness",
        PING_AND_TRUE,
    )
    .await
    else {
        return;
    };
    gateway.await_status("/live", 200, 10 * SECOND).await;
    libvirt.virsh_ok(&["destroy", &domain.name]);
    expect_state(&gateway, "domain shut off (destroyed)", "shut_off").await;
    libvirt.virsh_ok(&["undefine", &domain.name]);
    expect_state(&gateway, "no such domain", "no_domain").await;
}

#[tokio::test]
async fn a_stopped_agent_gets_bounded_answers_and_the_first_probe_after_it_is_right() {
    let probes = "livenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\nreadinessProbe:\n  exec:\n    command: [\"echo\", \"in step\"]\n  timeoutSeconds: 1\n";
    let Some((_libvirt, mut domain, gateway)) = started(
        "a_stopped_agent_gets_bounded_answers_and_the_first_probe_after_it_is_right",
        probes,
    )
    .await
    else {
        return;
    };
    gateway.await_status("/ready", 200, 10 * SECOND).await;
    let (code, _) = domain.control.sh("kill -STOP $(cat /run/qga0.pid)").await;
    assert_eq!(code, 0);
    for path in ["/live", "/ready", "/live", "/ready", "/live"] {
        let (status, report, took) = gateway.report(path).await;
        assert_eq!(status, 503, "{path}: {report}");
        assert!(took <= SECOND + SLACK, "{path} took {took:?}: {report}");
    }
    let (code, _) = domain.control.sh("kill -CONT $(cat /run/qga0.pid)").await;
    assert_eq!(code, 0);
    let live = gateway.await_status("/live", 200, 30 * SECOND).await;
    assert_eq!(live["result"], "success", "{live}");
    // The exec's own output: not a reply crossed with libvirt's resync.
    let ready = gateway.await_status("/ready", 200, 30 * SECOND).await;
    assert_eq!(ready["stdout"], "in step\n", "{ready}");
}

#[tokio::test]
async fn a_killed_daemon_gets_503_in_bounds_and_recovery_after_its_restart() {
    let test = "a_killed_daemon_gets_503_in_bounds_and_recovery_after_its_restart";
    let Some((mut libvirt, domain)) = session_with_domain(test, "gw").await else {
        return;
    };
    // libvirt's own error reports at debug, to see them reach the gateway's log.
    let gateway = LibvirtGateway::start_logging(
        &libvirt,
        &config(&libvirt, &domain.name, PING_AND_TRUE),
        &[],
        "info,libvirt=debug",
    );
    gateway.await_status("/live", 200, 10 * SECOND).await;
    libvirt.kill_daemon();
    let deadline = Instant::now() + 10 * SECOND;
    let live = loop {
        let (status, live, took) = gateway.report("/live").await;
        assert!(took <= 2 * SECOND + SLACK, "took {took:?}: {live}");
        if status == 503 {
            break live;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} with the daemon dead: {live}"
        );
    };
    assert!(reason(&live).contains("libvirt"), "{live}");
    for path in ["/live", "/ready"] {
        let (status, report, took) = gateway.report(path).await;
        assert_eq!(status, 503, "{path}: {report}");
        assert!(took <= 2 * SECOND + SLACK, "{path} took {took:?}");
    }
    libvirt.restart_daemon();
    gateway.await_status("/live", 200, 30 * SECOND).await;
    let ready = gateway.await_status("/ready", 200, 10 * SECOND).await;
    assert_eq!(ready["result"], "success");
    assert_eq!(
        libvirt.qemu_pid(&domain.name),
        domain.qemu_pid,
        "the same QEMU"
    );
    // libvirt's reports of the failures went through the gateway's logging, as JSON with
    // libvirt's code and text, and nothing was printed beside it.
    let reports = gateway.events("libvirt error");
    assert!(
        reports.iter().any(|report| report["code"] == 38
            && report["from"] == "XML-RPC"
            && report["error"]
                .as_str()
                .is_some_and(|m| m.contains("Failed to connect socket"))),
        "{reports:#?}"
    );
    assert_eq!(gateway.raw_lines(), Vec::<String>::new());
}

#[tokio::test]
async fn another_client_hammering_the_agent_leaves_every_answer_right() {
    let probes = "livenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 5\nreadinessProbe:\n  exec:\n    command: [\"echo\", \"the gateway's\"]\n  timeoutSeconds: 5\n";
    let Some((libvirt, domain, gateway)) = started(
        "another_client_hammering_the_agent_leaves_every_answer_right",
        probes,
    )
    .await
    else {
        return;
    };
    gateway.await_status("/ready", 200, 10 * SECOND).await;
    let script = format!(
        "while :; do virsh -q -c '{}' qemu-agent-command {} '{{\"execute\":\"guest-info\"}}' >/dev/null || echo failed; done",
        libvirt.uri(),
        domain.name
    );
    let mut hammer = libvirt
        .command("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for n in 0..40 {
        let (status, ready, _) = gateway.report("/ready").await;
        assert_eq!(status, 200, "probe {n}: {ready}");
        assert_eq!(ready["stdout"], "the gateway's\n", "probe {n}: {ready}");
        let (status, live, _) = gateway.report("/live").await;
        assert_eq!(status, 200, "probe {n}: {live}");
    }
    let _ = hammer.kill();
    let output = hammer.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("failed"),
        "the other client failed"
    );
}

#[tokio::test]
async fn a_missing_domain_or_socket_is_a_reason_not_a_crash() {
    if !libvirt_or_skip("a_missing_domain_or_socket_is_a_reason_not_a_crash") {
        return;
    }
    let libvirt = LibvirtSession::start();
    let gateway = LibvirtGateway::start(
        &libvirt,
        &config(&libvirt, "nowhere_vm", PING_AND_TRUE),
        &[],
    );
    // No domain: a migration target before the guest arrives.
    expect_state(&gateway, "no such domain", "no_domain").await;
    drop(gateway);
    let missing = "qemu+unix:///session?socket=/tmp/vpg-no-such-libvirt-sock";
    let gateway = LibvirtGateway::start(
        &libvirt,
        &config(&libvirt, "nowhere_vm", PING_AND_TRUE),
        &["--libvirt-uri", missing],
    );
    for path in ["/live", "/ready"] {
        let (status, report, _) = gateway.report(path).await;
        assert_eq!(status, 503, "{report}");
        assert!(
            reason(&report).contains("libvirt socket /tmp/vpg-no-such-libvirt-sock does not exist"),
            "{report}"
        );
    }
}

#[test]
fn remote_or_daemon_starting_uris_and_bad_config_are_refused_naming_the_field() {
    let binary = libvirt_binary();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&binary)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for uri in [
        "qemu+ssh://host/system",
        "qemu+tcp:///system",
        "qemu:///session",
        "qemu+unix:///session",
    ] {
        let (code, stderr) = run(&[
            "check",
            "liveness",
            "--config",
            "/nonexistent",
            "--libvirt-uri",
            uri,
        ]);
        assert_eq!(code, Some(2), "{uri}: {stderr}");
        assert!(
            stderr.contains("--libvirt-uri") && stderr.contains("qemu:///system"),
            "{uri}: {stderr}"
        );
    }
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "agent: \"libvirt:a b\"\nlibvirtUri: \"qemu+ext:///system?command=/bin/true\"\nlivenessProbe:\n  guestAgentPing: {}\n",
    )
    .unwrap();
    let (code, stderr) = run(&["validate", "--config", &file.display().to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("agent: \"libvirt:a b\""), "{stderr}");
    assert!(
        stderr.contains("libvirtUri: \"qemu+ext:///system"),
        "{stderr}"
    );
}
