//! A KubeVirt `VirtualMachine` or `VirtualMachineInstance` manifest as the config.
//!
//! The gateway runs beside the VM it probes, so the VM's own manifest is the natural place
//! for its checks: either in [`PROBES_ANNOTATION`] (then the manifest's probes are kubelet's
//! `httpGet` probes to the gateway and are ignored), or, for a manifest written for stock
//! KubeVirt, in its own `readinessProbe`/`livenessProbe`. Everything else in the manifest
//! belongs to KubeVirt and is ignored, so unknown fields there are not errors.

use serde_json::{Map, Value};

use super::document::{CHECKS_FIELDS, CheckFields, GATEWAY_OWN_FIELDS, read_checks};
use super::probe_fields::read_probe_field;
use super::syntax::read_syntax;
use super::walk::{
    Errors, FieldPath, describe, document_mapping, expect_mapping, set_value,
    unknown_field_message, unknown_fields,
};
use super::{
    ChecksOrigin, ConfigErrors, GatewayFile, LibvirtDomain, ManifestKind, PROBES_ANNOTATION,
    ProbeKind,
};

/// The API group of KubeVirt's kinds; `apiVersion` is `kubevirt.io/<version>`.
const KUBEVIRT_GROUP: &str = "kubevirt.io/";

/// What a document is, decided by its `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DocumentKind {
    /// No `kind`: the gateway's own config format.
    GatewayConfig,
    Manifest(ManifestKind),
    /// A `kind` the gateway does not read; its error is recorded.
    Unsupported,
}

/// Decides what the document is. A document with another `kind` gets one error about the
/// kind rather than one "unknown field" per Kubernetes field, which would bury the point.
pub(super) fn document_kind(map: &Map<String, Value>, errors: &mut Errors) -> DocumentKind {
    let Some(kind) = set_value(map, "kind") else {
        return DocumentKind::GatewayConfig;
    };
    let manifest_kind = match kind.as_str() {
        Some("VirtualMachine") => ManifestKind::VirtualMachine,
        Some("VirtualMachineInstance") => ManifestKind::VirtualMachineInstance,
        _ => {
            errors.add(
                &FieldPath::root().field("kind"),
                format!(
                    "unsupported kind {kind}; expected VirtualMachine or VirtualMachineInstance \
                     (kubevirt.io), or a gateway config, which has no kind"
                ),
            );
            return DocumentKind::Unsupported;
        }
    };
    check_api_version(map, manifest_kind, errors);
    DocumentKind::Manifest(manifest_kind)
}

/// A `VirtualMachine` of another API group is not KubeVirt's, so its layout is unknown.
fn check_api_version(map: &Map<String, Value>, kind: ManifestKind, errors: &mut Errors) {
    let Some(api_version) = set_value(map, "apiVersion") else {
        return;
    };
    if !api_version
        .as_str()
        .is_some_and(|text| text.starts_with(KUBEVIRT_GROUP))
    {
        errors.add(
            &FieldPath::root().field("apiVersion"),
            format!(
                "must be {KUBEVIRT_GROUP}<version> such as kubevirt.io/v1 for kind {} (found {api_version})",
                kind.as_str()
            ),
        );
    }
}

/// Where a kind keeps the pod-level parts the gateway reads.
pub(super) struct Layout {
    /// The path to the annotations of the VMI (a VM's template carries the VMI's).
    annotations: &'static [&'static str],
    /// The path to the VMI spec holding `readinessProbe` and `livenessProbe`.
    vmi_spec: &'static [&'static str],
}

impl Layout {
    pub(super) fn of(kind: ManifestKind) -> Layout {
        match kind {
            ManifestKind::VirtualMachineInstance => Layout {
                annotations: &["metadata", "annotations"],
                vmi_spec: &["spec"],
            },
            ManifestKind::VirtualMachine => Layout {
                annotations: &["spec", "template", "metadata", "annotations"],
                vmi_spec: &["spec", "template", "spec"],
            },
        }
    }

    /// The path of [`PROBES_ANNOTATION`], which its errors carry.
    pub(super) fn annotation_path(&self) -> FieldPath {
        path_of(self.annotations).field(PROBES_ANNOTATION)
    }

    /// The value of [`PROBES_ANNOTATION`] in `map`, if set; an error when the way to it is
    /// not KubeVirt's shape.
    pub(super) fn annotation<'a>(
        &self,
        map: &'a Map<String, Value>,
        errors: &mut Errors,
    ) -> Option<&'a Value> {
        descend(map, self.annotations, errors)
            .and_then(|annotations| set_value(annotations, PROBES_ANNOTATION))
    }
}

/// Reads the checks of a manifest: from [`PROBES_ANNOTATION`] when present, otherwise from
/// the manifest's own probes. `listen` and `agent` come from flags or environment.
pub(super) fn read_manifest(
    kind: ManifestKind,
    map: &Map<String, Value>,
    errors: &mut Errors,
) -> Option<GatewayFile> {
    let layout = Layout::of(kind);
    let annotation = layout.annotation(map, errors);
    let checks = match annotation {
        Some(value) => read_annotation(value, &layout.annotation_path(), errors),
        None => read_own_probes(kind, &layout, map, errors),
    }?;
    let origin = ChecksOrigin::Manifest {
        kind,
        from_annotation: annotation.is_some(),
    };
    Some(GatewayFile {
        vmi_domain: vmi_domain(map),
        ..checks.into_file(origin, None, None)
    })
}

/// The libvirt domain of the manifest's VMI, `<namespace>_<name>` (a VM's VMI has the VM's
/// name), when the manifest has both.
fn vmi_domain(map: &Map<String, Value>) -> Option<String> {
    let metadata = set_value(map, "metadata")?.as_object()?;
    let text = |key| set_value(metadata, key).and_then(Value::as_str);
    Some(LibvirtDomain::of_vmi(text("namespace")?, text("name")?))
}

/// Reads the annotation's value: a YAML or JSON document held in a string, with the checks
/// fields of a gateway config. Its errors carry the annotation's path followed by the path
/// inside the document.
pub(super) fn read_annotation(
    value: &Value,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<CheckFields> {
    let Value::String(text) = value else {
        errors.add(
            path,
            format!(
                "must be a string holding a YAML or JSON document (found {}); annotation \
                 values are strings: write `{PROBES_ANNOTATION}: |` with the document indented \
                 below it",
                describe(value)
            ),
        );
        return None;
    };
    let document = match read_syntax(text) {
        Ok(document) => document,
        Err(error) => {
            errors.add(
                path,
                format!("{error} (lines counted within the annotation value)"),
            );
            return None;
        }
    };
    let expected = "a mapping with readinessProbe and/or livenessProbe (and their checks)";
    let map = document_mapping(&document, path, expected, errors)?;
    for key in unknown_fields(map, CHECKS_FIELDS) {
        let message = match key {
            _ if GATEWAY_OWN_FIELDS.contains(&key) => {
                format!("{key} is set by flags or environment when the config is a manifest")
            }
            _ => unknown_field_message(key, CHECKS_FIELDS),
        };
        errors.add(&path.field(key), message);
    }
    Some(read_checks(map, path, errors))
}

/// Reads [`PROBES_ANNOTATION`]'s value on its own, as the injector finds it on a VM, VMI or
/// launcher pod: the checks it gives, and its document as JSON (to hand on to the gateway it
/// injects). Errors carry the paths inside the document.
pub(crate) fn read_probes_annotation(
    text: &str,
) -> Result<(GatewayFile, Map<String, Value>), ConfigErrors> {
    let mut errors = Errors::default();
    let value = Value::String(text.to_string());
    let checks = read_annotation(&value, &FieldPath::root(), &mut errors);
    let origin = ChecksOrigin::Manifest {
        kind: ManifestKind::VirtualMachineInstance,
        from_annotation: true,
    };
    let file = errors.finish(checks.map(|checks| checks.into_file(origin, None, None)))?;
    // Read once more as a tree: it is valid, so this cannot fail, but it is not unwrapped.
    let document = match read_syntax(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok((file, document))
}

/// Reads the manifest's own probes, as written for stock KubeVirt.
fn read_own_probes(
    kind: ManifestKind,
    layout: &Layout,
    map: &Map<String, Value>,
    errors: &mut Errors,
) -> Option<CheckFields> {
    let spec_path = path_of(layout.vmi_spec);
    let spec = descend(map, layout.vmi_spec, errors);
    let written = |probe: ProbeKind| spec.and_then(|spec| set_value(spec, probe.field()));
    if written(ProbeKind::Readiness).is_none() && written(ProbeKind::Liveness).is_none() {
        errors.add(
            &FieldPath::root(),
            format!(
                "no probe configured: a {} gets its checks from the {PROBES_ANNOTATION} \
                 annotation at {}, or from readinessProbe/livenessProbe at {spec_path}",
                kind.as_str(),
                path_of(layout.annotations),
            ),
        );
        return None;
    }
    let spec = spec?;
    Some(CheckFields {
        readiness: read_probe_field(spec, &spec_path, ProbeKind::Readiness, None, errors),
        liveness: read_probe_field(spec, &spec_path, ProbeKind::Liveness, None, errors),
        ..CheckFields::default()
    })
}

/// Follows `keys` down nested mappings. An absent or null step means "not there"; a step
/// that is not a mapping is an error, since then the manifest cannot be KubeVirt's shape.
fn descend<'a>(
    map: &'a Map<String, Value>,
    keys: &[&str],
    errors: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    let mut current = map;
    let mut path = FieldPath::root();
    for key in keys {
        path = path.field(key);
        current = expect_mapping(set_value(current, key)?, &path, errors)?;
    }
    Some(current)
}

fn path_of(keys: &[&str]) -> FieldPath {
    keys.iter()
        .fold(FieldPath::root(), |path, key| path.field(key))
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::test_support::{
        cat_healthy, errors_of, guest_agent_ping, single_error, single_error_starting_with,
    };
    use crate::config::{Handler, ProbeSpec, parse_document};

    /// The checks of the README's example, as the annotation's document.
    const README_CHECKS: &str = r#"readinessProbe:
  exec:
    command: ["cat", "/tmp/healthy.txt"]
  timeoutSeconds: 5
livenessProbe:
  guestAgentPing: {}
"#;

    /// `document` indented by `spaces`, as the content of a block scalar (`key: |`).
    fn block_content(document: &str, spaces: usize) -> String {
        document
            .lines()
            .map(|line| format!("{:spaces$}{line}\n", ""))
            .collect()
    }

    /// A VMI with the README's checks (and `exposeOutput`) in its annotation, and kubelet's
    /// httpGet probe to the gateway in its spec.
    fn vmi_with_annotation() -> String {
        let checks = block_content(&format!("{README_CHECKS}exposeOutput: true\n"), 6);
        format!(
            r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: vmi-fedora
  annotations:
    probe-gateway.kubevirt.io/probes: |
{checks}spec:
  readinessProbe:
    httpGet: {{path: /ready, port: 8080}}
    timeoutSeconds: 6
"#
        )
    }

    /// The VM of the README: checks in the template's annotation, kubelet's httpGet probes
    /// to the gateway in the template's spec.
    fn vm_with_annotation() -> String {
        let checks = block_content(&format!("{README_CHECKS}livenessGraceSeconds: 300\n"), 10);
        format!(
            r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: fedora
spec:
  runStrategy: Always
  template:
    metadata:
      labels:
        kubevirt.io/vm: fedora
      annotations:
        probe-gateway.kubevirt.io/probes: |
{checks}    spec:
      domain:
        devices: {{}}
      readinessProbe:
        httpGet: {{path: /ready, port: 8080}}
        timeoutSeconds: 6
      livenessProbe:
        httpGet: {{path: /live, port: 8080}}
        timeoutSeconds: 2
"#
        )
    }

    /// A VM whose template carries `annotation` (already indented as a block scalar's
    /// content) and the given template spec lines.
    fn vm(annotation: &str, template_spec: &str) -> String {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    metadata:\n      annotations:\n        probe-gateway.kubevirt.io/probes: |\n{annotation}    spec:\n{template_spec}"
        )
    }

    #[test]
    fn a_vmi_takes_its_checks_from_the_annotation() {
        let file = parse_document(&vmi_with_annotation()).unwrap();
        assert_eq!(
            file,
            GatewayFile {
                origin: ChecksOrigin::Manifest {
                    kind: ManifestKind::VirtualMachineInstance,
                    from_annotation: true,
                },
                listen: None,
                agent: None,
                libvirt_uri: None,
                vmi_domain: None,
                mode: None,
                min_interval: None,
                liveness_grace: None,
                expose_output: Some(true),
                output_excerpt_bytes: None,
                readiness: Some(cat_healthy(5)),
                liveness: Some(guest_agent_ping()),
                startup: None,
            }
        );
    }

    #[test]
    fn a_vm_takes_its_checks_from_its_templates_annotation_and_ignores_its_http_get_probes() {
        let file = parse_document(&vm_with_annotation()).unwrap();
        assert_eq!(
            file.origin,
            ChecksOrigin::Manifest {
                kind: ManifestKind::VirtualMachine,
                from_annotation: true,
            }
        );
        assert_eq!(file.readiness, Some(cat_healthy(5)));
        assert_eq!(file.liveness, Some(guest_agent_ping()));
        assert_eq!(file.liveness_grace, Some(Duration::from_secs(300)));
        assert_eq!((file.listen, file.agent), (None, None));
    }

    #[test]
    fn a_json_manifest_with_a_json_annotation_is_accepted() {
        let json = r#"{
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"annotations": {
                "probe-gateway.kubevirt.io/probes": "{\"livenessProbe\": {\"guestAgentPing\": {}}}"
            }},
            "spec": {"domain": {}}
        }"#;
        let file = parse_document(json).unwrap();
        assert_eq!(file.liveness, Some(guest_agent_ping()));
        assert_eq!(file.readiness, None);
    }

    #[test]
    fn a_vmi_without_the_annotation_uses_its_own_probes() {
        let file = parse_document(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: x\nspec:\n  readinessProbe:\n    exec:\n      command: [\"cat\", \"/tmp/healthy.txt\"]\n    timeoutSeconds: 5\n  livenessProbe:\n    guestAgentPing: {}\n",
        )
        .unwrap();
        assert_eq!(
            file.origin,
            ChecksOrigin::Manifest {
                kind: ManifestKind::VirtualMachineInstance,
                from_annotation: false,
            }
        );
        assert_eq!(file.readiness, Some(cat_healthy(5)));
        assert_eq!(file.liveness, Some(guest_agent_ping()));
    }

    #[test]
    fn a_vms_own_probe_errors_carry_their_manifest_paths() {
        let errors = errors_of(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec:\n      readinessProbe:\n        exec:\n          command: []\n      livenessProbe:\n        httpGet: {port: 80}\n",
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0]
                .starts_with("spec.template.spec.readinessProbe.exec.command: must not be empty"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1]
                .starts_with("spec.template.spec.livenessProbe.httpGet: the gateway runs only"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn errors_inside_the_annotation_carry_the_annotation_path() {
        let errors = errors_of(&vm(
            "          readinessProbe:\n            guestAgentPing: {}\n            timeoutSeconds: 0\n          livenessProbe:\n            exec: {command: [\"true\"]}\n            successThreshold: 2\n",
            "      domain: {}\n",
        ));
        assert_eq!(
            errors,
            [
                "spec.template.metadata.annotations[\"probe-gateway.kubevirt.io/probes\"].readinessProbe.timeoutSeconds: must be at least 1",
                "spec.template.metadata.annotations[\"probe-gateway.kubevirt.io/probes\"].livenessProbe.successThreshold: must be 1 for livenessProbe",
            ]
        );
    }

    #[test]
    fn a_syntax_error_in_the_annotation_carries_its_path_and_position() {
        let error = single_error_starting_with(
            "kind: VirtualMachineInstance\nmetadata:\n  annotations:\n    probe-gateway.kubevirt.io/probes: \"livenessProbe: [\"\n",
            "metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]: invalid YAML at line 1 column",
        );
        assert!(
            error.ends_with("(lines counted within the annotation value)"),
            "{error}"
        );
    }

    #[test]
    fn listen_and_agent_are_refused_in_the_annotation() {
        let errors = errors_of(&vm(
            "          listen: \"[::]:8080\"\n          agent: /run/qga.sock\n          livenessProbe:\n            guestAgentPing: {}\n",
            "      domain: {}\n",
        ));
        let path = "spec.template.metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]";
        assert_eq!(
            errors,
            [
                format!(
                    "{path}.agent: agent is set by flags or environment when the config is a manifest"
                ),
                format!(
                    "{path}.listen: listen is set by flags or environment when the config is a manifest"
                ),
            ]
        );
    }

    #[test]
    fn an_annotation_without_probes_is_rejected_at_its_path() {
        let error = single_error(&vm("          exposeOutput: true\n", "      domain: {}\n"));
        assert_eq!(
            error,
            "spec.template.metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]: no probe configured: set readinessProbe and/or livenessProbe"
        );
    }

    #[test]
    fn an_annotation_written_as_a_mapping_is_rejected_with_the_block_scalar_hint() {
        let error = single_error_starting_with(
            "kind: VirtualMachineInstance\nmetadata:\n  annotations:\n    probe-gateway.kubevirt.io/probes:\n      livenessProbe:\n        guestAgentPing: {}\n",
            "metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]: must be a string holding a YAML or JSON document (found a mapping)",
        );
        assert!(
            error.contains("probe-gateway.kubevirt.io/probes: |"),
            "{error}"
        );
    }

    #[test]
    fn a_manifests_unknown_fields_are_ignored() {
        let file = parse_document(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nstatus:\n  phase: Running\nmetadata:\n  name: x\n  uid: 1234\n  annotations:\n    other.example.com/key: value\nspec:\n  terminationGracePeriodSeconds: 0\n  somethingNew: {a: [1, 2]}\n  livenessProbe:\n    guestAgentPing: {}\n",
        )
        .unwrap();
        assert_eq!(file.liveness, Some(guest_agent_ping()));
    }

    #[test]
    fn a_manifest_without_annotation_or_probes_is_rejected_naming_both_places() {
        let error = single_error(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec:\n      domain: {}\n",
        );
        assert_eq!(
            error,
            "no probe configured: a VirtualMachine gets its checks from the \
             probe-gateway.kubevirt.io/probes annotation at spec.template.metadata.annotations, \
             or from readinessProbe/livenessProbe at spec.template.spec"
        );
    }

    #[test]
    fn a_kubevirt_kind_of_another_api_group_is_rejected() {
        let errors = errors_of(
            "apiVersion: example.com/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec:\n      livenessProbe:\n        guestAgentPing: {}\n",
        );
        assert_eq!(
            errors,
            [
                "apiVersion: must be kubevirt.io/<version> such as kubevirt.io/v1 for kind VirtualMachine (found \"example.com/v1\")"
            ]
        );
    }

    #[test]
    fn another_kind_is_one_error_not_one_per_kubernetes_field() {
        single_error_starting_with(
            "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {}\n",
            "kind: unsupported kind \"Pod\"",
        );
    }

    #[test]
    fn a_template_that_is_not_a_mapping_is_an_error_at_its_path() {
        let errors = errors_of("kind: VirtualMachine\nspec:\n  template: []\n");
        assert_eq!(
            errors.first().map(String::as_str),
            Some("spec.template: must be a mapping (found a list)")
        );
    }

    #[test]
    fn a_kubevirt_vmi_health_check_example_is_refused_only_for_its_http_get() {
        // KubeVirt's VMI health-check template as published in OpenShift Virtualization's
        // docs: every probe integer field is set, and the handler is httpGet, which the
        // gateway leaves to kubelet.
        single_error_starting_with(
            r#"
apiVersion: kubevirt.io/v1alpha3
kind: VirtualMachineInstance
metadata:
  labels:
    special: vmi-fedora
  name: vmi-fedora
spec:
  domain:
    devices:
      disks:
      - disk:
          bus: virtio
        name: containerdisk
    resources:
      requests:
        memory: 1024M
  readinessProbe:
    httpGet:
      port: 1500
    initialDelaySeconds: 120
    periodSeconds: 20
    timeoutSeconds: 10
    failureThreshold: 3
    successThreshold: 3
  terminationGracePeriodSeconds: 0
  volumes:
  - name: containerdisk
    containerDisk:
      image: kubevirt/fedora-cloud-registry-disk-demo
"#,
            "spec.readinessProbe.httpGet: the gateway runs only exec and guestAgentPing",
        );
    }

    #[test]
    fn a_kubevirt_vmi_exec_probe_with_every_integer_field_validates() {
        let file = parse_document(
            r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: vmi-fedora
spec:
  domain:
    resources:
      requests:
        memory: 1024M
  readinessProbe:
    exec:
      command: ["cat", "/tmp/healthy.txt"]
    initialDelaySeconds: 120
    periodSeconds: 20
    timeoutSeconds: 10
    failureThreshold: 3
    successThreshold: 3
  livenessProbe:
    guestAgentPing: {}
    initialDelaySeconds: 120
    periodSeconds: 20
    timeoutSeconds: 10
    failureThreshold: 3
    successThreshold: 1
"#,
        )
        .unwrap();
        let readiness = ProbeSpec {
            initial_delay_seconds: 120,
            period_seconds: 20,
            success_threshold: 3,
            ..cat_healthy(10)
        };
        assert_eq!(file.readiness, Some(readiness));
        assert_eq!(
            file.liveness
                .map(|spec| (spec.checks[0].handler.clone(), spec.success_threshold)),
            Some((Handler::GuestAgentPing, 1))
        );
    }
}
