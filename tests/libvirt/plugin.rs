//! The plugin road through the same libvirt: the domain XML that the gateway's
//! `MutateDomain` returns for the KubeVirt-shaped fixture is defined and started by the
//! real daemon, which so creates the private channel on the plugin volume exactly as
//! virt-launcher's daemon would; the gateway (`serve --kubevirt-plugin`, the plugin
//! volume's directory standing in for `/var/run/kubevirt-plugin/probe-gateway/`) probes
//! the guest's second agent on it while `virsh qemu-agent-command` keeps working on
//! libvirt's own `org.qemu.guest_agent.0`. Only host-specific parts of the XML are
//! swapped ([`on_this_host`]); the channel is kept as returned.

use std::path::Path;

use crate::gateway::{LibvirtGateway, SECOND, reason};
use crate::hook::on_this_host;
use crate::hook_support::{channels, domain_fixture, mutate, vmi_with_probes};
use crate::session::{LibvirtSession, libvirt_or_skip};

/// The probes of KubeVirt's probe docs' example: ready while `/tmp/healthy.txt` exists.
const PROBES: &str = "readinessProbe:\n  exec:\n    command: [\"cat\", \"/tmp/healthy.txt\"]\n  timeoutSeconds: 5\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

#[tokio::test]
async fn the_plugin_roads_domain_defined_by_libvirt_is_probed_through_its_channel_on_the_plugin_volume()
 {
    let test = "the_plugin_roads_domain_defined_by_libvirt_is_probed_through_its_channel_on_the_plugin_volume";
    if !libvirt_or_skip(test) {
        return;
    }
    let mut libvirt = LibvirtSession::start();
    // The plugin volume (the pod's kubevirt-plugin-sockets emptyDir); the sidecar and
    // compute both see its probe-gateway/ sub-directory at the same path.
    let volume = libvirt.dir().join("plugins");
    std::fs::create_dir(&volume).unwrap();
    libvirt.give_to_user(&volume);
    let socket = volume.join("probe-gateway/domain-hook.sock");
    let socket_arg = socket.display().to_string();
    let gateway = LibvirtGateway::spawn(
        &libvirt,
        Path::new(env!("CARGO_BIN_EXE_virt-probe-gateway")),
        &["--kubevirt-plugin", "--plugin-socket", &socket_arg],
        &[],
    );

    // virt-launcher's call at boot, with KubeVirt's domain and the VMI carrying the checks.
    let vmis = tempfile::tempdir().unwrap();
    let vmi = vmi_with_probes(vmis.path(), Some(PROBES));
    let answer = mutate(&socket, &domain_fixture(), &vmi, "Boot");
    assert_eq!(answer["ok"], true, "{answer}");
    let returned = answer["domain"].as_str().unwrap();
    let channel = volume.join("probe-gateway/probe-gateway-qga.sock");
    let private: Vec<_> = channels(returned)
        .into_iter()
        .filter(|c| c.target_name.as_deref() == Some("org.qemu.guest_agent.1"))
        .collect();
    assert_eq!(private.len(), 1, "{returned}");
    assert_eq!(
        private[0].source_path.as_deref(),
        Some(channel.to_str().unwrap())
    );

    let name = "default_vm-fedora";
    let files = libvirt.guest_files(name);
    let xml = on_this_host(returned, &files, libvirt.dir());
    let mut domain = libvirt.start_domain_xml(name, &xml, &files.control).await;
    let live = libvirt.virsh_ok(&["dumpxml", name]);
    assert!(
        live.contains(&format!(
            "<source mode='bind' path='{}'/>",
            channel.display()
        )),
        "{live}"
    );

    let ping = r#"{"execute":"guest-ping"}"#;
    let pong = Ok(r#"{"return":{}}"#.to_string());
    let report = gateway.await_status("/live", 200, 60 * SECOND).await;
    assert!(report["reason"].is_null(), "{report}");
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(
        (status, reason(&ready)),
        (503, "exec: exit code 1"),
        "{ready}"
    );
    domain.control.sh("echo ok > /tmp/healthy.txt").await;
    gateway.await_status("/ready", 200, 10 * SECOND).await;
    assert_eq!(libvirt.agent_command(name, ping, Some(5)), pong);

    // The second agent stopped: the gateway's checks fail in bounds; libvirt's agent answers.
    domain.control.sh("kill -STOP $(cat /run/qga1.pid)").await;
    let (status, _, took) = gateway.report("/live").await;
    assert_eq!(status, 503);
    assert!(
        took <= SECOND + std::time::Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(libvirt.agent_command(name, ping, Some(5)), pong);
    domain.control.sh("kill -CONT $(cat /run/qga1.pid)").await;
    gateway.await_status("/live", 200, 30 * SECOND).await;

    // A redefinition (a boot defines the domain two or three times) changes nothing.
    let defined = vmis.path().join("defined.xml");
    std::fs::write(&defined, returned).unwrap();
    let again = mutate(&socket, &defined, &vmi, "Boot");
    assert_eq!(again["domain"].as_str(), Some(returned));
}
