//! The gateway as a KubeVirt hook sidecar (`serve --kubevirt-hook`), driven as
//! virt-launcher drives it: a gRPC client that is not the gateway's code (Python grpcio) on
//! the hook socket, realistic domain XML and VMI fixtures, and a real qemu-ga behind the
//! private channel's socket.

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually;
use crate::support::gateway::{Gateway, run_cli};
use crate::support::hook::{
    Channel, channels, define, domain_fixture, hook_call, vmi_fixture, vmi_with, vmi_with_probes,
};
use crate::support::qga::QemuGa;

/// The channel's socket as QEMU in the compute container sees it, for `hook-sidecar-0`.
const CHANNEL_PATH: &str = "/var/run/kubevirt-hooks/hook-sidecar-0/probe-gateway-qga.sock";

struct Hooked {
    dir: tempfile::TempDir,
    gateway: Gateway,
}

impl Hooked {
    /// A gateway in hook mode with its own hooks directory.
    fn start(args: &[&str]) -> Hooked {
        let dir = tempfile::tempdir().expect("temp dir");
        let gateway = Gateway::start_hook(&dir.path().join("hooks"), args);
        Hooked { dir, gateway }
    }

    fn hooks_dir(&self) -> PathBuf {
        self.dir.path().join("hooks")
    }

    fn socket(&self) -> PathBuf {
        self.hooks_dir().join("probe-gateway.sock")
    }

    /// Puts `agent`'s socket where QEMU would create the private channel's: in the hooks
    /// directory (KubeVirt 1.6 and later), or in the container's sub-directory (before).
    fn plug_agent(&self, agent: &QemuGa, shared_layout: bool) {
        let dir = if shared_layout {
            self.hooks_dir().join("hook-sidecar-0")
        } else {
            self.hooks_dir()
        };
        symlink(agent.socket(), dir.join("probe-gateway-qga.sock")).expect("plug the agent");
    }
}

fn the_gateways_channel(xml: &str) -> Vec<Channel> {
    channels(xml)
        .into_iter()
        .filter(|c| c.target_name.as_deref() == Some("org.qemu.guest_agent.1"))
        .collect()
}

fn fixture_text() -> String {
    std::fs::read_to_string(domain_fixture()).expect("domain fixture")
}

#[test]
fn info_names_the_gateway_its_versions_and_hook_points() {
    let hooked = Hooked::start(&[]);
    let info = hook_call(&hooked.socket(), &["info"]);
    assert_eq!(info["ok"], true, "{info}");
    assert_eq!(info["name"], "probe-gateway");
    assert_eq!(
        info["versions"],
        serde_json::json!(["v1alpha2", "v1alpha3"])
    );
    assert_eq!(
        info["hookPoints"],
        serde_json::json!([
            {"name": "OnDefineDomain", "priority": 0},
            {"name": "Shutdown", "priority": 0},
        ])
    );
}

#[test]
fn on_define_domain_adds_one_channel_and_leaves_the_rest_byte_for_byte() {
    let hooked = Hooked::start(&[]);
    let answer = define(&hooked.socket(), &domain_fixture(), &vmi_fixture());
    assert_eq!(answer["ok"], true, "{answer}");
    let before = fixture_text();
    let after = answer["domainXML"].as_str().expect("domain XML");

    assert_eq!(
        the_gateways_channel(after),
        vec![Channel {
            kind: Some("unix".into()),
            source_mode: Some("bind".into()),
            source_path: Some(CHANNEL_PATH.into()),
            target_type: Some("virtio".into()),
            target_name: Some("org.qemu.guest_agent.1".into()),
        }]
    );
    // The primary channel is still libvirt's, without a source path.
    let primary: Vec<Channel> = channels(after)
        .into_iter()
        .filter(|c| c.target_name.as_deref() == Some("org.qemu.guest_agent.0"))
        .collect();
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0].source_path, None);
    // Removing the inserted text gives back the input exactly.
    let added = after.len() - before.len();
    let start = before
        .bytes()
        .zip(after.bytes())
        .position(|(a, b)| a != b)
        .expect("something was added");
    let inserted = &after[start..start + added];
    assert_eq!(
        format!("{}{}", &after[..start], &after[start + added..]),
        before
    );
    assert!(
        inserted.contains("org.qemu.guest_agent.1") && inserted.trim_end().ends_with("</channel>"),
        "{inserted}"
    );
    assert!(
        after.contains("value=\"&lt;kept&gt;\""),
        "entities kept as written"
    );
}

#[test]
fn on_define_domain_is_idempotent_as_on_a_migration_target() {
    let hooked = Hooked::start(&[]);
    let first = define(&hooked.socket(), &domain_fixture(), &vmi_fixture());
    let once = first["domainXML"].as_str().expect("domain XML").to_string();
    let defined = hooked.dir.path().join("defined.xml");
    std::fs::write(&defined, &once).expect("write");
    let second = define(&hooked.socket(), &defined, &vmi_fixture());
    assert_eq!(second["ok"], true, "{second}");
    assert_eq!(second["domainXML"].as_str(), Some(once.as_str()));
    assert_eq!(the_gateways_channel(&once).len(), 1);
}

#[test]
fn v1alpha2_on_define_domain_adds_the_same_channel() {
    let hooked = Hooked::start(&[]);
    let answer = hook_call(
        &hooked.socket(),
        &[
            "define",
            &domain_fixture().display().to_string(),
            &vmi_fixture().display().to_string(),
            "--version",
            "v1alpha2",
        ],
    );
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        the_gateways_channel(answer["domainXML"].as_str().unwrap()).len(),
        1
    );
}

#[tokio::test]
async fn malformed_domain_xml_is_invalid_argument_and_the_gateway_stays_up() {
    let hooked = Hooked::start(&[]);
    let broken = hooked.dir.path().join("broken.xml");
    let text = fixture_text().replace("</devices>", "");
    std::fs::write(&broken, text).expect("write");
    let answer = define(&hooked.socket(), &broken, &vmi_fixture());
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["code"], "INVALID_ARGUMENT");
    let details = answer["details"].as_str().unwrap();
    assert!(
        details.contains("domain XML is malformed at byte"),
        "{details}"
    );
    // Nothing was defined; the gateway serves and still waits.
    assert_eq!(hooked.gateway.get("/healthz").await.status, 200);
    let reply = hooked.gateway.get("/ready").await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.starts_with("waiting for the VM definition"),
        "{}",
        reply.body
    );
}

#[test]
fn bad_checks_are_invalid_argument_with_the_messages_of_validate() {
    let hooked = Hooked::start(&[]);
    let probes = "readinessProbe:\n  exec:\n    command: []\n  timeoutSeconds: 0\nlivenessProbe:\n  httpGet: {port: 8080}\n";
    let vmi = vmi_with_probes(hooked.dir.path(), Some(probes));
    let answer = define(&hooked.socket(), &domain_fixture(), &vmi);
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    let details = answer["details"].as_str().unwrap();

    // validate on the same VMI, as a manifest file.
    let (code, _, stderr) = run_cli(&["validate", "--config", &vmi.display().to_string()], &[]);
    assert_eq!(code, 2, "{stderr}");
    let prefix = format!("error: {}: ", vmi.display());
    let messages: Vec<&str> = stderr
        .lines()
        .map(|line| line.strip_prefix(&prefix).expect("validate's error line"))
        .collect();
    assert_eq!(messages.len(), 3, "{stderr}");
    for message in messages {
        assert!(message.starts_with("metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]"));
        assert!(details.contains(message), "{message:?} not in {details:?}");
    }
}

#[test]
fn a_vmi_without_the_annotation_is_refused_naming_it() {
    let hooked = Hooked::start(&[]);
    let vmi = vmi_with_probes(hooked.dir.path(), None);
    let answer = define(&hooked.socket(), &domain_fixture(), &vmi);
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    let details = answer["details"].as_str().unwrap();
    assert!(
        details.contains("metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]: not set"),
        "{details}"
    );
}

#[tokio::test]
async fn probes_wait_for_the_definition_then_run_the_vmis_checks() {
    let agent = QemuGa::start();
    let hooked = Hooked::start(&[]);
    for path in ["/ready", "/live"] {
        let reply = hooked.gateway.get(path).await;
        assert_eq!(reply.status, 503, "{path}");
        assert!(
            reply.body.starts_with("waiting for the VM definition"),
            "{}",
            reply.body
        );
        let (status, body) = hooked.gateway.report(path).await;
        assert_eq!(status, 503);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("waiting for the VM definition")
        );
    }

    let marker = hooked.dir.path().join("healthy");
    let probes = format!(
        "readinessProbe:\n  exec:\n    command: [cat, {}]\n  timeoutSeconds: 5\nlivenessProbe:\n  guestAgentPing: {{}}\n",
        marker.display()
    );
    let vmi = vmi_with_probes(hooked.dir.path(), Some(&probes));
    assert_eq!(
        define(&hooked.socket(), &domain_fixture(), &vmi)["ok"],
        true
    );
    // QEMU starts after the definition and creates the channel's socket.
    hooked.plug_agent(&agent, false);

    // The agent client reconnects within its backoff (at most 1 s).
    eventually(
        "the readiness check runs in the guest",
        Duration::from_secs(5),
        || async {
            let reply = hooked.gateway.get("/ready").await;
            reply.status == 503 && reply.body.starts_with("exec: exit code 1")
        },
    )
    .await;
    let (status, report) = hooked.gateway.report("/live").await;
    assert_eq!((status, &report["reason"]), (200, &Value::Null), "{report}");
    assert_eq!(report["handler"], "guestAgentPing");
    std::fs::write(&marker, "ok").expect("touch");
    assert_eq!(hooked.gateway.get("/ready").await.status, 200);
}

/// The VMI's annotation with named checks and a startup probe, read at `OnDefineDomain`:
/// the same probes as from a config file, behind the private channel.
#[tokio::test]
async fn the_vmis_named_checks_and_startup_probe_run_in_hook_mode() {
    let agent = QemuGa::start();
    let hooked = Hooked::start(&[]);
    let up = hooked.dir.path().join("app-up");
    let probes = format!(
        "checks:\n  agent: {{guestAgentPing: {{}}}}\n  app: {{exec: {{command: [test, -e, {}]}}}}\nreadinessProbe:\n  checks: [agent, app]\nlivenessProbe:\n  checks: [agent]\nstartupProbe:\n  checks: [app]\n  periodSeconds: 1\n  failureThreshold: 600\n",
        up.display()
    );
    let vmi = vmi_with_probes(hooked.dir.path(), Some(&probes));
    assert_eq!(
        define(&hooked.socket(), &domain_fixture(), &vmi)["ok"],
        true
    );
    hooked.plug_agent(&agent, false);
    eventually(
        "the startup probe's first failure",
        Duration::from_secs(5),
        || async {
            hooked
                .gateway
                .get("/started")
                .await
                .body
                .starts_with("starting: app: exec: exit code 1")
        },
    )
    .await;
    assert_eq!(hooked.gateway.get("/live").await.status, 200, "starting");
    std::fs::write(&up, "").unwrap();
    eventually("started", Duration::from_secs(5), || async {
        hooked.gateway.get("/started").await.status == 200
    })
    .await;
    let reply = hooked.gateway.get("/ready?verbose").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.starts_with("[+]agent ok\n"), "{}", reply.body);
    assert_eq!(hooked.gateway.get("/ready/app").await.status, 200);
}

#[tokio::test]
async fn the_channel_socket_is_found_in_the_shared_layout_of_kubevirt_before_1_6() {
    let agent = QemuGa::start();
    let hooked = Hooked::start(&[]);
    // The gateway made its container's sub-directory, so QEMU's path exists with one
    // hooks volume mounted whole in every container.
    assert!(hooked.hooks_dir().join("hook-sidecar-0").is_dir());
    let vmi = vmi_with_probes(
        hooked.dir.path(),
        Some("livenessProbe:\n  guestAgentPing: {}\n"),
    );
    assert_eq!(
        define(&hooked.socket(), &domain_fixture(), &vmi)["ok"],
        true
    );
    let reply = hooked.gateway.get("/live").await;
    assert_eq!(
        reply.status, 200,
        "the liveness grace covers a VM that is not up yet"
    );
    let (_, report) = hooked.gateway.report("/live").await;
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("agent not reached yet"),
        "{report}"
    );
    hooked.plug_agent(&agent, true);
    eventually(
        "the agent answers through the shared-layout path",
        Duration::from_secs(5),
        || async {
            let (status, report) = hooked.gateway.report("/live").await;
            status == 200 && report["reason"] == Value::Null
        },
    )
    .await;
}

#[tokio::test]
async fn a_config_file_wins_over_the_vmi_and_serves_before_the_definition() {
    let agent = QemuGa::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let hooks = dir.path().join("hooks");
    let hooks_arg = hooks.display().to_string();
    let gateway = Gateway::start_with(
        "livenessProbe:\n  guestAgentPing: {}\n",
        &["--kubevirt-hook", "--hooks-dir", &hooks_arg],
    );
    // The hook socket is bound before the gateway listens.
    let socket = hooks.join("probe-gateway.sock");
    symlink(agent.socket(), hooks.join("probe-gateway-qga.sock")).expect("plug the agent");
    assert_eq!(gateway.get("/live").await.status, 200);
    // The VMI needs no annotation, and its domain still gets the channel.
    let vmi = vmi_with_probes(dir.path(), None);
    let answer = define(&socket, &domain_fixture(), &vmi);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        the_gateways_channel(answer["domainXML"].as_str().unwrap()).len(),
        1
    );
    assert_eq!(
        gateway.get("/ready").await.status,
        404,
        "the config has no readiness"
    );
}

#[test]
fn with_an_explicit_agent_the_domain_is_returned_unchanged() {
    let agent = QemuGa::start();
    let agent_arg = agent.socket().display().to_string();
    let hooked = Hooked::start(&["--agent", &agent_arg]);
    let answer = define(&hooked.socket(), &domain_fixture(), &vmi_fixture());
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["domainXML"].as_str(), Some(fixture_text().as_str()));
}

#[test]
fn shutdown_finishes_and_exits_zero_removing_the_socket() {
    let mut hooked = Hooked::start(&[]);
    let answer = hook_call(&hooked.socket(), &["shutdown"]);
    assert_eq!(answer["ok"], true, "{answer}");
    let status = hooked.gateway.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(!hooked.socket().exists());
    let logs = hooked.gateway.logs();
    assert!(
        logs.iter().any(
            |e| e["message"] == "shutting down: draining in-flight requests"
                && e["reason"] == "KubeVirt's Shutdown hook"
        ),
        "{logs:#?}"
    );
}

#[test]
fn pre_cloud_init_iso_is_not_a_hook_point() {
    let hooked = Hooked::start(&[]);
    let answer = hook_call(&hooked.socket(), &["pre-cloud-init"]);
    assert_eq!(answer["code"], "UNIMPLEMENTED", "{answer}");
}

#[test]
fn a_stale_hook_socket_is_replaced_and_a_foreign_file_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).expect("mkdir");
    // A socket left by an earlier run of the container.
    let stale = std::os::unix::net::UnixListener::bind(hooks.join("probe-gateway.sock"))
        .expect("stale socket");
    drop(stale);
    let gateway = Gateway::start_hook(&hooks, &[]);
    assert_eq!(
        hook_call(&hooks.join("probe-gateway.sock"), &["info"])["ok"],
        true
    );
    drop(gateway);

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("probe-gateway.sock"), "not a socket").expect("write");
    let (code, _, stderr) = run_cli(
        &[
            "serve",
            "--kubevirt-hook",
            "--hooks-dir",
            &other.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("CONTAINER_NAME", "hook-sidecar-0")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("probe-gateway.sock") && stderr.contains("not a socket"),
        "{stderr}"
    );
}

#[test]
fn a_container_name_that_cannot_be_a_path_component_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = run_cli(
        &[
            "serve",
            "--kubevirt-hook",
            "--hooks-dir",
            &dir.path().display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("CONTAINER_NAME", "../etc")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("CONTAINER_NAME"), "{stderr}");
}

#[test]
fn the_hooks_dir_holds_exactly_one_socket_for_virt_launcher() {
    let hooked = Hooked::start(&[]);
    let entries: Vec<String> = std::fs::read_dir(hooked.hooks_dir())
        .expect("read hooks dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    // Exactly one non-directory entry: virt-launcher counts them.
    let files: Vec<&String> = entries
        .iter()
        .filter(|name| !hooked.hooks_dir().join(name.as_str()).is_dir())
        .collect();
    assert_eq!(files, vec!["probe-gateway.sock"], "{entries:?}");
}

#[tokio::test]
async fn a_definition_with_other_checks_replaces_them_on_the_same_connection() {
    let agent = QemuGa::start();
    let hooked = Hooked::start(&[]);
    hooked.plug_agent(&agent, false);
    let ping_only = vmi_with_probes(
        hooked.dir.path(),
        Some("livenessProbe:\n  guestAgentPing: {}\n"),
    );
    assert_eq!(
        define(&hooked.socket(), &domain_fixture(), &ping_only)["ok"],
        true
    );
    eventually("the agent answers", Duration::from_secs(5), || async {
        let (status, report) = hooked.gateway.report("/live").await;
        status == 200 && report["reason"] == Value::Null
    })
    .await;
    assert_eq!(hooked.gateway.get("/ready").await.status, 404);

    let with_readiness = vmi_with_probes(
        hooked.dir.path(),
        Some(
            "readinessProbe:\n  exec:\n    command: [\"false\"]\n  timeoutSeconds: 2\nlivenessProbe:\n  guestAgentPing: {}\n",
        ),
    );
    assert_eq!(
        define(&hooked.socket(), &domain_fixture(), &with_readiness)["ok"],
        true
    );
    // A listening agent serves one client: a second connection would wait behind the
    // first. The new checks answer at once, on the connection already open.
    let reply = hooked.gateway.get("/ready").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "exec: exit code 1\n")
    );
    let logs = hooked.gateway.logs();
    assert_eq!(
        logs.iter()
            .filter(|e| e["message"] == "the VM is defined: its checks are in force")
            .count(),
        2,
        "{logs:#?}"
    );
}

#[tokio::test]
async fn a_vsock_agent_takes_its_cid_from_the_vmi_and_adds_no_channel() {
    let hooked = Hooked::start(&["--agent", "vsock://vmi:1234"]);
    let answer = define(&hooked.socket(), &domain_fixture(), &vmi_fixture());
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["domainXML"].as_str(), Some(fixture_text().as_str()));
    // The fixture's status.vsockCID is 3; this machine has no vsock peer, so the reason
    // names the address the gateway now dials.
    let reply = hooked.gateway.get("/ready").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("vsock://3:1234"), "{}", reply.body);

    let without = vmi_with(hooked.dir.path(), |vmi| {
        vmi["status"].as_object_mut().unwrap().remove("vsockCID");
    });
    let other = Hooked::start(&["--agent", "vsock://vmi:1234"]);
    let answer = define(&other.socket(), &domain_fixture(), &without);
    assert_eq!(answer["code"], "INVALID_ARGUMENT", "{answer}");
    assert!(
        answer["details"]
            .as_str()
            .unwrap()
            .contains("agent: vsock://vmi:1234: the VMI has no status.vsockCID"),
        "{answer}"
    );
}

#[test]
fn vsock_of_the_vmi_outside_hook_mode_is_a_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, "livenessProbe:\n  guestAgentPing: {}\n").expect("write");
    let (code, _, stderr) = run_cli(
        &[
            "serve",
            "--config",
            &config.display().to_string(),
            "--agent",
            "vsock://vmi:1234",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("needs --kubevirt-hook"), "{stderr}");
}

#[tokio::test]
async fn sighup_without_a_config_file_is_logged_and_the_gateway_keeps_serving() {
    let hooked = Hooked::start(&[]);
    hooked.gateway.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("the SIGHUP log line", Duration::from_secs(5), || async {
        hooked
            .gateway
            .logs()
            .iter()
            .any(|e| e["message"] == "SIGHUP: there is no config file to reload")
    })
    .await;
    assert_eq!(hooked.gateway.get("/healthz").await.status, 200);
}

/// A hook sidecar whose checks come from a config file, written atomically (as a
/// ConfigMap update would be) to be reloaded.
struct HookedWithConfig {
    hooked: Hooked,
    config: PathBuf,
}

impl HookedWithConfig {
    fn start(config: &str) -> HookedWithConfig {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config").join("gateway.yaml");
        std::fs::create_dir(path.parent().unwrap()).expect("config dir");
        std::fs::write(&path, config).expect("write config");
        let gateway = Gateway::start_hook(
            &dir.path().join("hooks"),
            &["--config", &path.display().to_string()],
        );
        HookedWithConfig {
            hooked: Hooked { dir, gateway },
            config: path,
        }
    }

    fn update(&self, config: &str) {
        let staged = self.config.with_extension("staged");
        std::fs::write(&staged, config).expect("write config");
        std::fs::rename(&staged, &self.config).expect("replace config");
    }

    fn define_with_cid(&self, cid: u32) {
        let vmi = vmi_with(self.hooked.dir.path(), |vmi| {
            vmi["status"]["vsockCID"] = cid.into();
        });
        let answer = define(&self.hooked.socket(), &domain_fixture(), &vmi);
        assert_eq!(answer["ok"], true, "{answer}");
    }

    /// What `/ready` answers: this machine has no vsock peer, so the reason names the
    /// address the gateway dials.
    async fn ready(&self) -> String {
        self.hooked.gateway.get("/ready").await.body
    }
}

const READY_BY_PING: &str = "readinessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

#[tokio::test]
async fn a_redefinition_with_another_vsock_cid_moves_the_checks_to_it() {
    let hooked = HookedWithConfig::start(&format!("agent: \"vsock://vmi:1234\"\n{READY_BY_PING}"));
    hooked.define_with_cid(3);
    let ready = hooked.ready().await;
    assert!(ready.contains("vsock://3:1234"), "{ready}");
    hooked.define_with_cid(7);
    let ready = hooked.ready().await;
    assert!(ready.contains("vsock://7:1234"), "{ready}");
}

#[tokio::test]
async fn a_reload_to_the_vms_vsock_after_the_definition_takes_the_cid_of_the_vmi() {
    let hooked = HookedWithConfig::start(READY_BY_PING);
    hooked.define_with_cid(5);
    hooked.update(&format!("agent: \"vsock://vmi:1234\"\n{READY_BY_PING}"));
    hooked
        .hooked
        .gateway
        .await_config_reloads("applied", 1.0)
        .await;
    let ready = hooked.ready().await;
    assert!(ready.contains("vsock://5:1234"), "{ready}");
}
