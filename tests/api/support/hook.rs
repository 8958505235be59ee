//! KubeVirt's side of the hook and plugin protocols, for tests: virt-launcher's gRPC calls
//! (through tests/hook/hook_client.py and tests/plugin/plugin_client.py, Python grpcio
//! clients independent of the gateway's server code), the fixtures, and reading the
//! channels of a domain XML.

use std::path::{Path, PathBuf};
use std::process::Command;

use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use serde_json::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A domain XML as KubeVirt generates it: the primary agent channel without a source path,
/// disks, an interface, a serial console, a vsock device.
pub fn domain_fixture() -> PathBuf {
    repo().join("tests/hook/fixtures/domain.xml")
}

/// A VMI as virt-launcher hands it to hooks, with the gateway's annotation.
pub fn vmi_fixture() -> PathBuf {
    repo().join("tests/hook/fixtures/vmi.json")
}

/// The VMI fixture with the annotation set to `probes` (`None`: removed), written to `dir`.
pub fn vmi_with_probes(dir: &Path, probes: Option<&str>) -> PathBuf {
    vmi_with(dir, |vmi| {
        let annotations = vmi["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations");
        match probes {
            Some(text) => {
                annotations.insert("probe-gateway.kubevirt.io/probes".into(), text.into());
            }
            None => {
                annotations.remove("probe-gateway.kubevirt.io/probes");
            }
        }
    })
}

/// The VMI fixture changed by `edit`, written in `dir`.
pub fn vmi_with(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut vmi: Value =
        serde_json::from_slice(&std::fs::read(vmi_fixture()).expect("read the VMI fixture"))
            .expect("the VMI fixture is JSON");
    edit(&mut vmi);
    let path = dir.join(format!("vmi-{}.json", fastrand::u32(..)));
    std::fs::write(&path, serde_json::to_vec(&vmi).expect("VMI JSON")).expect("write VMI");
    path
}

/// Calls the hook service at `socket` with `args` (see hook_client.py) and returns its
/// JSON answer. Fails loudly when Python's gRPC tools are missing.
pub fn hook_call(socket: &Path, args: &[&str]) -> Value {
    client_call("tests/hook/hook_client.py", socket, args)
}

fn client_call(client: &str, socket: &Path, args: &[&str]) -> Value {
    let output = Command::new("python3")
        .arg(repo().join(client))
        .arg(socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run python3 {client}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{client} {args:?} failed ({}): {stderr}\n(scripts/test.sh installs grpcio and \
         grpcio-tools from scripts/requirements-test.txt)",
        output.status
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{client} printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Calls the plugin service at `socket` with `args` (see plugin_client.py) and returns
/// its JSON answer. Fails loudly when Python's gRPC tools are missing.
pub fn plugin_call(socket: &Path, args: &[&str]) -> Value {
    client_call("tests/plugin/plugin_client.py", socket, args)
}

/// `MutateDomain` with these files and invocation context.
pub fn mutate(socket: &Path, domain: &Path, vmi: &Path, context: &str) -> Value {
    plugin_call(
        socket,
        &[
            "mutate",
            &domain.display().to_string(),
            &vmi.display().to_string(),
            context,
        ],
    )
}

/// `OnDefineDomain` (v1alpha3) with these files.
pub fn define(socket: &Path, domain: &Path, vmi: &Path) -> Value {
    hook_call(
        socket,
        &[
            "define",
            &domain.display().to_string(),
            &vmi.display().to_string(),
        ],
    )
}

/// A `<channel>` of a domain's devices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Channel {
    pub kind: Option<String>,
    pub source_mode: Option<String>,
    pub source_path: Option<String>,
    pub target_type: Option<String>,
    pub target_name: Option<String>,
}

/// The channels under `<domain><devices>`, in order.
pub fn channels(xml: &str) -> Vec<Channel> {
    let mut reader = Reader::from_str(xml);
    let mut depth_names: Vec<String> = Vec::new();
    let mut found = Vec::new();
    let mut current: Option<Channel> = None;
    loop {
        let event = reader.read_event().expect("well-formed domain XML");
        let (element, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            Event::End(_) => {
                let name = depth_names.pop().unwrap_or_default();
                if name == "channel" && depth_names == ["domain", "devices"] {
                    found.extend(current.take());
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let Some(element) = element else { continue };
        let name = element.local_name().as_ref().to_string();
        let attr = |key: &str| {
            element.try_get_attribute(key).expect("attribute").map(|a| {
                a.normalized_value(XmlVersion::Implicit1_0)
                    .expect("value")
                    .into_owned()
            })
        };
        if name == "channel" && depth_names == ["domain", "devices"] {
            current = Some(Channel {
                kind: attr("type"),
                ..Channel::default()
            });
        } else if let Some(channel) = current.as_mut() {
            match name.as_str() {
                "source" => {
                    channel.source_mode = attr("mode");
                    channel.source_path = attr("path");
                }
                "target" => {
                    channel.target_type = attr("type");
                    channel.target_name = attr("name");
                }
                _ => {}
            }
        }
        if empty {
            if name == "channel" && depth_names == ["domain", "devices"] {
                found.extend(current.take());
            }
        } else {
            depth_names.push(name);
        }
    }
    found
}
