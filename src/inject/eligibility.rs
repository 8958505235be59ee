//! Whether a VMI's probes can be answered by the gateway: the decision made on the VM and
//! the VMI (only they know the interfaces), carried to the pod by annotation.
//!
//! Kubelet probes the pod IP. The gateway's port there reaches the gateway only if the
//! VMI's pod network leaves it alone (docs/inject.md, "Which VMs"):
//! - masquerade with a `ports` (or `portRanges`) list forwards only those into the guest,
//!   so the gateway's port must be outside them;
//! - masquerade without a list forwards every port of the pod IP into the guest;
//! - bridge gives the pod IP to the guest; passt and binding plugins forward as they
//!   choose; SR-IOV is not the pod network;
//! - no pod network, or one whose interface the cluster will default (its binding is
//!   KubeVirt's cluster setting, which the webhook cannot read): not known to be reachable.
//!
//! Everything here reads the object's JSON as it came; a field of the wrong type makes the
//! object [`Malformed`], which the webhook allows unchanged with a warning.

use serde_json::{Map, Value};

use super::decision::{Decision, Road};
use crate::config::{InjectSettings, PROBES_ANNOTATION, ProbeKind, read_probes_annotation};

/// An object the webhook cannot read: the JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {what}")]
pub(crate) struct Malformed {
    pub path: String,
    pub what: String,
}

/// What the VMI spec (or a VM's template) says about the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Eligibility {
    /// No exec or guestAgentPing probe, and no probe in the gateway's annotation: nothing
    /// for the gateway to take over.
    NoProbes,
    /// The decision to carry to the pods.
    Decided(Decision),
}

/// Decides for a VMI spec (`spec`) with its annotations (`annotations`; for a VM, the
/// template's and the VM's own, in that order of precedence), `road` being the
/// namespace's (the webhook path it was reviewed on) unless an annotation names another.
pub(crate) fn decide(
    spec: &Value,
    annotations: &[&Map<String, Value>],
    road: Road,
    settings: &InjectSettings,
) -> Result<Eligibility, Malformed> {
    let spec = mapping(spec, "spec")?;
    let mut probes = probes_to_take_over(spec)?;
    // The gateway's own annotation: the first map that has it (the template's before the
    // VM's own) is the one the VMI carries.
    let annotated = annotations
        .iter()
        .find_map(|annotations| annotations.get(PROBES_ANNOTATION));
    if let Some(annotated) = annotated {
        let Some(text) = annotated.as_str() else {
            return Err(malformed(
                &format!("metadata.annotations[{PROBES_ANNOTATION:?}]"),
                "not a string",
            ));
        };
        match read_probes_annotation(text) {
            Ok((file, _)) => {
                for kind in ProbeKind::ALL {
                    if file.probe(kind).is_some() && !probes.contains(&kind.as_str()) {
                        probes.push(kind.as_str());
                    }
                }
            }
            Err(errors) => {
                let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                return Ok(Eligibility::Decided(Decision::skip(format!(
                    "its {PROBES_ANNOTATION} annotation is not valid: {}",
                    errors.join("; ")
                ))));
            }
        }
    }
    if probes.is_empty() {
        return Ok(Eligibility::NoProbes);
    }
    probes.sort_by_key(|name| {
        ProbeKind::ALL
            .iter()
            .position(|kind| kind.as_str() == *name)
    });
    let probes = listed(&probes);
    let opt_out = &settings.opt_out_annotation;
    for annotations in annotations {
        if annotations.get(opt_out).and_then(Value::as_str) == Some("false") {
            return Ok(Eligibility::Decided(Decision::skip(format!(
                "opted out ({opt_out}: \"false\")"
            ))));
        }
    }
    let mut road = road;
    for annotations in annotations.iter().rev() {
        if let Some(named) = annotations.get(&settings.road_annotation) {
            let text = named.as_str().unwrap_or_default();
            road = Road::parse(text).ok_or_else(|| {
                malformed(
                    &format!("metadata.annotations[{:?}]", settings.road_annotation),
                    "not \"libvirt\" or \"plugin\"",
                )
            })?;
        }
    }
    let port = settings.port;
    let how = match road {
        Road::Libvirt => "through libvirt",
        Road::Plugin => {
            "through a private agent channel (the KubeVirt plugin road: the guest must run a \
             second qemu-ga on org.qemu.guest_agent.1)"
        }
    };
    let decision = match pod_network_interface(spec)? {
        Err(why) => Decision::skip(why),
        Ok(interface) => match binding(interface)? {
            Binding::Masquerade => match forwarded(interface, port)? {
                Forwarded::Everything => Decision::skip(
                    "its masquerade interface has no ports list, so every port of the pod IP \
                     is forwarded into the guest: list the VM's ports to use the gateway",
                ),
                Forwarded::Port(which) => Decision::skip(format!(
                    "port {port}, the gateway's, is forwarded into the guest ({which})"
                )),
                Forwarded::Others => Decision::inject(
                    port,
                    road,
                    format!(
                        "its {probes} probe will be answered by the gateway on port {port}, {how}"
                    ),
                ),
            },
            Binding::Other(name) => Decision::skip(format!(
                "its pod network interface uses {name}, which does not leave a port of the \
                 pod IP to the gateway"
            )),
        },
    };
    Ok(Eligibility::Decided(decision))
}

/// `a`, `a and b`, `a, b and c`: the probes named in a decision or a patch's summary.
pub(super) fn listed(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [first @ .., last] => format!("{} and {last}", first.join(", ")),
    }
}

/// The VMI's probes the gateway would answer: `readiness`, `liveness`, or both.
fn probes_to_take_over(spec: &Map<String, Value>) -> Result<Vec<&'static str>, Malformed> {
    let mut found = Vec::new();
    for (field, name) in [
        ("readinessProbe", "readiness"),
        ("livenessProbe", "liveness"),
    ] {
        let Some(probe) = optional(spec, field) else {
            continue;
        };
        let probe = mapping(probe, &format!("spec.{field}"))?;
        if present(probe, "exec") || present(probe, "guestAgentPing") {
            found.push(name);
        }
    }
    Ok(found)
}

/// The interface on the pod network, or why there is none the webhook can judge.
fn pod_network_interface(
    spec: &Map<String, Value>,
) -> Result<Result<&Map<String, Value>, String>, Malformed> {
    let networks = list(spec, "networks", "spec")?;
    let interfaces = match optional(spec, "domain") {
        Some(domain) => {
            let domain = mapping(domain, "spec.domain")?;
            match optional(domain, "devices") {
                Some(devices) => list(
                    mapping(devices, "spec.domain.devices")?,
                    "interfaces",
                    "spec.domain.devices",
                )?,
                None => &[][..],
            }
        }
        None => &[][..],
    };
    if networks.is_empty() && interfaces.is_empty() {
        return Ok(Err(
            "it lists no networks, so KubeVirt gives it the cluster's default pod interface, \
             whose binding (bridge unless the cluster says otherwise) and ports the webhook \
             cannot know"
                .to_string(),
        ));
    }
    let mut pod_network = None;
    for (i, network) in networks.iter().enumerate() {
        let path = format!("spec.networks[{i}]");
        let network = mapping(network, &path)?;
        if present(network, "pod") {
            pod_network = Some(text(network, "name", &path)?);
        }
    }
    let Some(name) = pod_network else {
        return Ok(Err(
            "it has no pod network, so kubelet cannot reach a port of its pod".to_string(),
        ));
    };
    for (i, interface) in interfaces.iter().enumerate() {
        let path = format!("spec.domain.devices.interfaces[{i}]");
        let interface = mapping(interface, &path)?;
        if text(interface, "name", &path)? == name {
            return Ok(Ok(interface));
        }
    }
    Ok(Err(format!(
        "no interface is attached to its pod network {name:?}"
    )))
}

enum Binding {
    Masquerade,
    /// Another binding, as its owner would name it.
    Other(String),
}

fn binding(interface: &Map<String, Value>) -> Result<Binding, Malformed> {
    if present(interface, "masquerade") {
        return Ok(Binding::Masquerade);
    }
    for (field, name) in [
        ("bridge", "bridge binding (the guest owns the pod IP)"),
        ("passtBinding", "passt binding"),
        ("passt", "passt binding"),
        ("sriov", "SR-IOV"),
        ("slirp", "slirp"),
        ("macvtap", "macvtap"),
    ] {
        if present(interface, field) {
            return Ok(Binding::Other(name.to_string()));
        }
    }
    if let Some(plugin) = optional(interface, "binding") {
        let plugin = mapping(plugin, "interface.binding")?;
        let name = text(plugin, "name", "interface.binding")?;
        return Ok(Binding::Other(format!("the binding plugin {name:?}")));
    }
    Ok(Binding::Other("no binding KubeVirt knows".to_string()))
}

enum Forwarded {
    /// No list: every port.
    Everything,
    /// The gateway's port is among them: which entry.
    Port(String),
    /// A list without the gateway's port.
    Others,
}

/// What the masquerade interface forwards into the guest, as far as TCP on `port` goes
/// (kubelet's probe is TCP; a UDP entry takes nothing from it).
fn forwarded(interface: &Map<String, Value>, port: u16) -> Result<Forwarded, Malformed> {
    let ports = list(interface, "ports", "interface")?;
    let ranges = list(interface, "portRanges", "interface")?;
    if ports.is_empty() && ranges.is_empty() {
        return Ok(Forwarded::Everything);
    }
    let tcp = |entry: &Map<String, Value>, path: &str| -> Result<bool, Malformed> {
        Ok(match optional(entry, "protocol") {
            None => true,
            Some(protocol) => protocol
                .as_str()
                .ok_or_else(|| malformed(&format!("{path}.protocol"), "not a string"))?
                .eq_ignore_ascii_case("TCP"),
        })
    };
    for (i, entry) in ports.iter().enumerate() {
        let path = format!("interface.ports[{i}]");
        let entry = mapping(entry, &path)?;
        if number(entry, "port", &path)? == i64::from(port) && tcp(entry, &path)? {
            return Ok(Forwarded::Port(format!("ports[{i}]")));
        }
    }
    for (i, entry) in ranges.iter().enumerate() {
        let path = format!("interface.portRanges[{i}]");
        let entry = mapping(entry, &path)?;
        let (start, end) = (number(entry, "start", &path)?, number(entry, "end", &path)?);
        if (start..=end).contains(&i64::from(port)) && tcp(entry, &path)? {
            return Ok(Forwarded::Port(format!("portRanges[{i}], {start}-{end}")));
        }
    }
    Ok(Forwarded::Others)
}

fn malformed(path: &str, what: &str) -> Malformed {
    Malformed {
        path: path.to_string(),
        what: what.to_string(),
    }
}

fn mapping<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Malformed> {
    value
        .as_object()
        .ok_or_else(|| malformed(path, "not an object"))
}

/// A field that is set (present and not null).
fn optional<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|value| !value.is_null())
}

fn present(map: &Map<String, Value>, field: &str) -> bool {
    map.get(field).is_some_and(|value| !value.is_null())
}

fn list<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<&'a [Value], Malformed> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(malformed(&format!("{path}.{field}"), "not a list")),
    }
}

fn text<'a>(map: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, Malformed> {
    map.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(&format!("{path}.{field}"), "not a string"))
}

fn number(map: &Map<String, Value>, field: &str, path: &str) -> Result<i64, Malformed> {
    map.get(field)
        .and_then(Value::as_i64)
        .ok_or_else(|| malformed(&format!("{path}.{field}"), "not an integer"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::testing::settings;

    fn decide_spec(spec: Value) -> Result<Eligibility, Malformed> {
        decide(&spec, &[], Road::Libvirt, &settings())
    }

    fn spec_with(interface: Value) -> Value {
        json!({
            "domain": {"devices": {"interfaces": [interface]}},
            "networks": [{"name": "default", "pod": {}}],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
            "livenessProbe": {"guestAgentPing": {}},
        })
    }

    fn skipped(spec: Value) -> String {
        match decide_spec(spec) {
            Ok(Eligibility::Decided(decision)) if !decision.inject => decision.reason,
            other => panic!("not skipped: {other:?}"),
        }
    }

    #[test]
    fn masquerade_with_ports_that_leave_the_gateways_port_is_eligible() {
        let spec = spec_with(
            json!({"name": "default", "masquerade": {}, "ports": [{"port": 22}, {"port": 8190, "protocol": "UDP"}]}),
        );
        let Ok(Eligibility::Decided(decision)) = decide_spec(spec) else {
            panic!()
        };
        assert!(decision.inject);
        assert_eq!(decision.port, Some(8190));
        assert_eq!(
            decision.reason,
            "its readiness and liveness probe will be answered by the gateway on port 8190, through libvirt"
        );
        assert_eq!(decision.road, Some(Road::Libvirt));
    }

    #[test]
    fn the_road_is_the_namespaces_unless_an_annotation_names_one() {
        let spec = spec_with(json!({"name": "default", "masquerade": {}, "ports": [{"port": 22}]}));
        let road = |annotations: &[&Map<String, Value>], namespace: Road| match decide(
            &spec,
            annotations,
            namespace,
            &settings(),
        ) {
            Ok(Eligibility::Decided(decision)) => decision.road,
            other => panic!("{other:?}"),
        };
        assert_eq!(road(&[], Road::Plugin), Some(Road::Plugin));
        let plugin = json!({"probe-gateway.kubevirt.io/road": "plugin"});
        let libvirt = json!({"probe-gateway.kubevirt.io/road": "libvirt"});
        let (plugin, libvirt) = (plugin.as_object().unwrap(), libvirt.as_object().unwrap());
        assert_eq!(road(&[plugin], Road::Libvirt), Some(Road::Plugin));
        // The template's word wins over the VM's own.
        assert_eq!(road(&[libvirt, plugin], Road::Plugin), Some(Road::Libvirt));
        let bad = json!({"probe-gateway.kubevirt.io/road": "vsock"});
        assert_eq!(
            decide(
                &spec,
                &[bad.as_object().unwrap()],
                Road::Libvirt,
                &settings()
            ),
            Err(malformed(
                "metadata.annotations[\"probe-gateway.kubevirt.io/road\"]",
                "not \"libvirt\" or \"plugin\""
            ))
        );
    }

    #[test]
    fn masquerade_without_ports_forwards_everything_into_the_guest() {
        let reason = skipped(spec_with(json!({"name": "default", "masquerade": {}})));
        assert!(reason.contains("every port of the pod IP"), "{reason}");
    }

    #[test]
    fn the_gateways_port_among_the_forwarded_ones_is_not_eligible() {
        let reason = skipped(spec_with(
            json!({"name": "default", "masquerade": {}, "ports": [{"port": 8190}]}),
        ));
        assert_eq!(
            reason,
            "port 8190, the gateway's, is forwarded into the guest (ports[0])"
        );
        let reason = skipped(spec_with(
            json!({"name": "default", "masquerade": {}, "portRanges": [{"protocol": "TCP", "start": 8000, "end": 9000}]}),
        ));
        assert_eq!(
            reason,
            "port 8190, the gateway's, is forwarded into the guest (portRanges[0], 8000-9000)"
        );
    }

    #[test]
    fn other_bindings_and_missing_pod_networks_are_not_eligible() {
        for (interface, says) in [
            (json!({"name": "default", "bridge": {}}), "bridge binding"),
            (json!({"name": "default", "passtBinding": {}}), "passt"),
            (
                json!({"name": "default", "binding": {"name": "netbind"}}),
                "\"netbind\"",
            ),
            (
                json!({"name": "other", "masquerade": {}, "ports": [{"port": 22}]}),
                "no interface is attached",
            ),
        ] {
            let reason = skipped(spec_with(interface));
            assert!(reason.contains(says), "{reason}");
        }
        let multus_only = json!({
            "domain": {"devices": {"interfaces": [{"name": "a", "bridge": {}}]}},
            "networks": [{"name": "a", "multus": {"networkName": "x"}}],
            "livenessProbe": {"guestAgentPing": {}},
        });
        assert!(skipped(multus_only).contains("no pod network"));
        let defaulted = json!({"livenessProbe": {"guestAgentPing": {}}});
        assert!(skipped(defaulted).contains("cluster's default pod interface"));
    }

    #[test]
    fn no_exec_or_ping_probe_is_nothing_to_take_over() {
        let mut spec =
            spec_with(json!({"name": "default", "masquerade": {}, "ports": [{"port": 22}]}));
        spec["readinessProbe"] = json!({"httpGet": {"port": 80}});
        spec["livenessProbe"] = Value::Null;
        assert_eq!(decide_spec(spec), Ok(Eligibility::NoProbes));
    }

    #[test]
    fn an_opt_out_annotation_is_honoured() {
        let spec = spec_with(json!({"name": "default", "masquerade": {}, "ports": [{"port": 22}]}));
        let annotations = json!({"probe-gateway.kubevirt.io/inject": "false"});
        let Ok(Eligibility::Decided(decision)) = decide(
            &spec,
            &[annotations.as_object().unwrap()],
            Road::Libvirt,
            &settings(),
        ) else {
            panic!()
        };
        assert!(!decision.inject);
        assert!(
            decision.reason.starts_with("opted out"),
            "{}",
            decision.reason
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_names_its_path() {
        let mut spec = spec_with(json!({"name": "default", "masquerade": {}, "ports": "22"}));
        assert_eq!(
            decide_spec(spec.clone()),
            Err(malformed("interface.ports", "not a list"))
        );
        spec["networks"] = json!({"name": "default"});
        assert_eq!(
            decide_spec(spec),
            Err(malformed("spec.networks", "not a list"))
        );
        assert_eq!(
            decide_spec(json!([])),
            Err(malformed("spec", "not an object"))
        );
    }
}
