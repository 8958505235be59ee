//! KubeVirt hook mode through the same libvirt: the domain XML that the gateway's
//! `OnDefineDomain` returns for the KubeVirt-shaped fixture is defined and started by the
//! real daemon, which so creates the gateway's private channel exactly as it would in a
//! launcher pod; the gateway probes the guest's second agent on it while `virsh
//! qemu-agent-command` keeps working on libvirt's own `org.qemu.guest_agent.0`.
//!
//! Only host-specific parts of the returned XML are swapped, each named in
//! [`on_this_host`] (the plugin test uses it too); the channel the gateway added is kept as
//! it returned it, but for the hooks volume's mount point.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::gateway::{LibvirtGateway, SECOND, reason};
use crate::hook_support::{channels, define, domain_fixture, vmi_with_probes};
use crate::session::{GuestFiles, LibvirtSession, libvirt_or_skip};

/// The probes of KubeVirt's probe docs' example: ready while `/tmp/healthy.txt` exists.
const PROBES: &str = "readinessProbe:\n  exec:\n    command: [\"cat\", \"/tmp/healthy.txt\"]\n  timeoutSeconds: 5\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 1\n";

/// Where KubeVirt mounts the hooks volume in the compute container, as the gateway
/// writes the channel's path.
const HOOKS_MOUNT: &str = "/var/run/kubevirt-hooks/";

/// `xml` with exactly one `from` replaced by `to`; fails if `from` is not there once.
pub fn swap(xml: &str, from: &str, to: &str) -> String {
    assert_eq!(xml.matches(from).count(), 1, "{from:?} in {xml}");
    xml.replacen(from, to, 1)
}

/// `xml` without each element that starts with `start` (up to its `end`); fails if there
/// are not `count` of them.
fn cut(xml: &str, start: &str, end: &str, count: usize) -> String {
    assert_eq!(xml.matches(start).count(), count, "{start:?} in {xml}");
    let mut xml = xml.to_string();
    while let Some(from) = xml.find(start) {
        let to = from + xml[from..].find(end).expect("the element's end") + end.len();
        xml.replace_range(from..to, "");
    }
    xml
}

/// The domain KubeVirt would define, made to run on this host: what a launcher pod has
/// and this machine has not.
pub fn on_this_host(xml: &str, files: &GuestFiles, session: &Path) -> String {
    // No KVM here (FIELD-NOTES §6): TCG, and Debian's QEMU binary.
    let xml = swap(xml, "<domain type=\"kvm\"", "<domain type=\"qemu\"");
    let xml = swap(
        &xml,
        "<emulator>/usr/libexec/qemu-kvm</emulator>",
        "<emulator>/usr/bin/qemu-system-x86_64</emulator>",
    );
    // The container disk and cloud-init ISO are the pod's: the tests/vm guest boots from
    // its kernel and initramfs instead.
    let xml = cut(&xml, "<disk ", "</disk>", 2);
    let xml = swap(
        &xml,
        "<type arch=\"x86_64\" machine=\"q35\">hvm</type>",
        &format!(
            "<type arch=\"x86_64\" machine=\"q35\">hvm</type><kernel>{}</kernel><initrd>{}</initrd><cmdline>{}</cmdline>",
            files.kernel.display(),
            files.initrd.display(),
            crate::image::KERNEL_CMDLINE
        ),
    );
    // The pod network's tap device, the host's vhost-vsock device and the host's CPU
    // model are not here (no /dev/vhost-vsock; TCG has no host CPU to copy).
    let xml = cut(&xml, "<interface ", "</interface>", 1);
    let xml = cut(&xml, "<vsock ", "</vsock>", 1);
    let xml = swap(
        &xml,
        "<cpu mode=\"host-model\">",
        "<cpu mode=\"custom\"><model>qemu64</model>",
    );
    // An unprivileged session daemon has no cgroup partitions.
    let xml = cut(&xml, "<resource>", "</resource>", 1);
    // Sockets and files under the pod's private directory, here in the session's.
    let private = "/var/run/kubevirt-private/5d307ca9-b3ef-428c-8861-06e72d69f223/";
    let xml = swap(
        &xml,
        &format!("<listen type=\"socket\" socket=\"{private}virt-vnc\">"),
        &format!(
            "<listen type=\"socket\" socket=\"{}\">",
            session.join("vnc").display()
        ),
    );
    let xml = swap(
        &xml,
        &format!(
            "<serial type=\"unix\">\n\t\t\t<target port=\"0\"></target>\n\t\t\t<source mode=\"bind\" path=\"{private}virt-serial0\"></source>"
        ),
        &format!(
            "<serial type=\"file\">\n\t\t\t<target port=\"0\"></target>\n\t\t\t<source path=\"{}\"></source>",
            files.console.display()
        ),
    );
    // The test's own way into the guest (what the guest's init waits for).
    swap(
        &xml,
        "</devices>",
        &format!(
            "<channel type=\"unix\"><source mode=\"bind\" path=\"{}\"/><target type=\"virtio\" name=\"org.probe-gateway.test.control\"/></channel>\n\t</devices>",
            files.control.display()
        ),
    )
}

#[tokio::test]
async fn hook_mode_probes_the_private_channel_of_a_domain_libvirt_defined_while_virsh_uses_the_stock_one()
 {
    let test = "hook_mode_probes_the_private_channel_of_a_domain_libvirt_defined_while_virsh_uses_the_stock_one";
    if !libvirt_or_skip(test) {
        return;
    }
    let mut libvirt = LibvirtSession::start();
    // The hooks volume (an emptyDir shared by compute and the sidecar); KubeVirt 1.6+
    // mounts its `hook-sidecar-0` sub-directory as the sidecar's hooks dir.
    let volume = libvirt.dir().join("hooks");
    std::fs::create_dir(&volume).unwrap();
    libvirt.give_to_user(&volume);
    let hooks_dir = volume.join("hook-sidecar-0");
    let hooks = hooks_dir.display().to_string();
    let gateway = LibvirtGateway::spawn(
        &libvirt,
        Path::new(env!("CARGO_BIN_EXE_virt-probe-gateway")),
        &["--kubevirt-hook", "--hooks-dir", &hooks],
        &[("CONTAINER_NAME", "hook-sidecar-0")],
    );

    // virt-launcher's call, with KubeVirt's domain and the VMI carrying the probes.
    let vmis = tempfile::tempdir().unwrap();
    let vmi = vmi_with_probes(vmis.path(), Some(PROBES));
    let socket = hooks_dir.join("probe-gateway.sock");
    let answer = define(&socket, &domain_fixture(), &vmi);
    assert_eq!(answer["ok"], true, "{answer}");
    let returned = answer["domainXML"].as_str().expect("domain XML");
    let private: Vec<_> = channels(returned)
        .into_iter()
        .filter(|c| c.target_name.as_deref() == Some("org.qemu.guest_agent.1"))
        .collect();
    assert_eq!(private.len(), 1, "{returned}");
    let in_compute = private[0].source_path.clone().expect("the channel's path");
    assert!(in_compute.starts_with(HOOKS_MOUNT), "{in_compute}");

    let name = "default_vm-fedora";
    let files = libvirt.guest_files(name);
    // The hooks volume is mounted here, not at /var/run/kubevirt-hooks.
    let returned = swap(
        returned,
        &format!("path=\"{HOOKS_MOUNT}"),
        &format!("path=\"{}/", volume.display()),
    );
    let xml = on_this_host(&returned, &files, libvirt.dir());
    let mut domain = libvirt.start_domain_xml(name, &xml, &files.control).await;

    // libvirt made both channels: its own, connected, and the gateway's, bound where the
    // returned XML said (in this volume).
    let live = libvirt.virsh_ok(&["dumpxml", name]);
    assert!(
        live.contains("name='org.qemu.guest_agent.0' state='connected'"),
        "{live}"
    );
    let bound: PathBuf = volume.join(in_compute.trim_start_matches(HOOKS_MOUNT));
    assert!(
        live.contains(&format!("<source mode='bind' path='{}'/>", bound.display())),
        "{live}"
    );

    let ping = r#"{"execute":"guest-ping"}"#;
    let pong = Ok(r#"{"return":{}}"#.to_string());
    let report = gateway.await_status("/live", 200, 60 * SECOND).await;
    assert!(report["reason"].is_null(), "{report}");
    assert_eq!(libvirt.agent_command(name, ping, Some(5)), pong);
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(
        (status, reason(&ready)),
        (503, "exec: exit code 1"),
        "{ready}"
    );
    domain.control.sh("echo ok > /tmp/healthy.txt").await;
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{ready}");

    // The checks go through the second agent: stopped, they fail within their timeout,
    // while libvirt's agent keeps answering virsh.
    domain.control.sh("kill -STOP $(cat /run/qga1.pid)").await;
    let started = Instant::now();
    let (status, live, took) = gateway.report("/live").await;
    assert_eq!(status, 503, "{live}");
    assert!(took <= SECOND + Duration::from_millis(500), "{took:?}");
    assert_eq!(libvirt.agent_command(name, ping, Some(5)), pong);
    domain.control.sh("kill -CONT $(cat /run/qga1.pid)").await;
    let report = gateway.await_status("/live", 200, 30 * SECOND).await;
    assert!(report["reason"].is_null(), "{report}");
    eprintln!(
        "hook mode through libvirt: the private channel's agent back {:.2} s after SIGSTOP",
        started.elapsed().as_secs_f64()
    );
    // And the other way: libvirt's agent stopped, the gateway's checks still pass.
    domain.control.sh("kill -STOP $(cat /run/qga0.pid)").await;
    let (status, live, _) = gateway.report("/live").await;
    assert_eq!(status, 200, "{live}");
    let (status, ready, _) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{ready}");
    domain.control.sh("kill -CONT $(cat /run/qga0.pid)").await;
}
