//! The VMI that virt-launcher hands a hook sidecar at `OnDefineDomain`, read once.
//!
//! The hook takes two answers from it: the checks, from [`PROBES_ANNOTATION`](super::PROBES_ANNOTATION) only, when the
//! gateway has no config file of its own; and the vsock CID (`status.vsockCID`), whenever
//! the VMI has one, for an agent at `vsock://vmi:PORT`. [`HookedVmi::parse`] reads the JSON
//! once and each answer is read from that tree when asked, so the checks cost nothing when
//! a config file gives them. This module owns those two readings, not the rules of the
//! annotation's document, which are a manifest's ([`super::manifest`]).

use serde_json::{Map, Value};

use super::manifest::{Layout, read_annotation};
use super::walk::{Errors, FieldPath, document_mapping};
use super::{ChecksOrigin, ConfigErrors, GatewayFile, ManifestKind};

/// What a whole VMI must be, named in the error about one of another shape.
const VMI_EXPECTED: &str = "the VirtualMachineInstance as a JSON object";

/// The VMI of the VM whose hook sidecar the gateway is, as virt-launcher hands it at
/// `OnDefineDomain` (JSON), parsed once for both of its answers.
#[derive(Debug)]
pub(crate) struct HookedVmi {
    /// The VMI's JSON tree, or why the bytes are not JSON (each answer says it in its own
    /// words).
    json: Result<Value, serde_json::Error>,
}

impl HookedVmi {
    /// Parses the VMI's JSON. Never fails: a VMI that is not JSON is reported by each
    /// answer, as the hook wants it.
    pub(crate) fn parse(vmi_json: &[u8]) -> HookedVmi {
        HookedVmi {
            json: serde_json::from_slice(vmi_json),
        }
    }

    /// The checks, from [`PROBES_ANNOTATION`](super::PROBES_ANNOTATION) only. In a VMI that carries the gateway as a
    /// sidecar, `readinessProbe`/`livenessProbe` are kubelet's `httpGet` probes to the
    /// gateway, not checks for it. Errors read as `validate` reports them for a VMI
    /// manifest.
    pub(crate) fn checks(&self) -> Result<GatewayFile, ConfigErrors> {
        let mut errors = Errors::default();
        let root = FieldPath::root();
        let file = match &self.json {
            Ok(value) => document_mapping(value, &root, VMI_EXPECTED, &mut errors)
                .and_then(|map| read_vmi_annotation(map, &mut errors)),
            Err(error) => {
                errors.add(&root, format!("the VMI is not JSON: {error}"));
                None
            }
        };
        errors.finish(file)
    }

    /// The VMI's vsock CID (`status.vsockCID`), for an agent at `vsock://vmi:PORT`.
    pub(crate) fn vsock_cid(&self) -> Result<u32, String> {
        let vmi = self
            .json
            .as_ref()
            .map_err(|e| format!("is not JSON: {e}"))?;
        let cid = &vmi["status"]["vsockCID"];
        match cid.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(cid) if cid > 2 => Ok(cid),
            _ if cid.is_null() => Err("status.vsockCID: not set: the agent is vsock://vmi:PORT, \
                 which needs KubeVirt's VSOCK feature gate and autoattachVSOCK: true on the VM"
                .into()),
            _ => Err(format!(
                "status.vsockCID: {cid} is not a guest CID (3 to 4294967295)"
            )),
        }
    }
}

fn read_vmi_annotation(map: &Map<String, Value>, errors: &mut Errors) -> Option<GatewayFile> {
    let layout = Layout::of(ManifestKind::VirtualMachineInstance);
    let annotation_path = layout.annotation_path();
    let Some(value) = layout.annotation(map, errors) else {
        if !errors.is_empty() {
            // `metadata` or its `annotations` is not a mapping: said already.
            return None;
        }
        errors.add(
            &annotation_path,
            "not set: the gateway runs as this VM's hook sidecar and reads its checks from this \
             annotation of the VM's template (readinessProbe and/or livenessProbe); the VMI's \
             own probes are kubelet's httpGet probes to the gateway",
        );
        return None;
    };
    let checks = read_annotation(value, &annotation_path, errors)?;
    let origin = ChecksOrigin::Manifest {
        kind: ManifestKind::VirtualMachineInstance,
        from_annotation: true,
    };
    Some(checks.into_file(origin, None, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PROBES_ANNOTATION;
    use crate::config::test_support::{cat_healthy, errors_of, guest_agent_ping};

    /// The checks of `vmi`, as the hook reads them.
    fn checks_from_vmi(vmi: &[u8]) -> Result<GatewayFile, ConfigErrors> {
        HookedVmi::parse(vmi).checks()
    }

    /// The vsock CID of `vmi`, as the hook reads it.
    fn vsock_cid_of_vmi(vmi: &[u8]) -> Result<u32, String> {
        HookedVmi::parse(vmi).vsock_cid()
    }

    /// The VMI as virt-launcher hands it to a hook: JSON, with status, and no probes of
    /// its own for the gateway.
    fn vmi_json(annotation: Option<&str>) -> Vec<u8> {
        let annotations = match annotation {
            Some(text) => serde_json::json!({ PROBES_ANNOTATION: text }),
            None => serde_json::json!({}),
        };
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"name": "vm-1", "namespace": "default", "annotations": annotations},
            "spec": {"readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}}},
            "status": {"phase": "Scheduled", "vsockCID": 3},
        }))
        .unwrap()
    }

    #[test]
    fn a_hooked_vmi_takes_its_checks_from_the_annotation_only() {
        let file = checks_from_vmi(&vmi_json(Some(
            "readinessProbe:\n  exec:\n    command: [cat, /tmp/healthy.txt]\n  timeoutSeconds: 5\n",
        )))
        .unwrap();
        assert_eq!(file.readiness, Some(cat_healthy(5)));
        assert_eq!(file.liveness, None);
    }

    #[test]
    fn a_hooked_vmi_without_the_annotation_is_refused_naming_it() {
        let errors = checks_from_vmi(&vmi_json(None)).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].path,
            "metadata.annotations[\"probe-gateway.kubevirt.io/probes\"]"
        );
        assert!(errors[0].message.starts_with("not set"), "{errors:?}");
    }

    #[test]
    fn a_hooked_vmi_reports_its_annotations_errors_as_validate_does() {
        let annotation = "readinessProbe:\n  exec:\n    command: []\n  timeoutSeconds: -1\n";
        let from_hook: Vec<String> = checks_from_vmi(&vmi_json(Some(annotation)))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        let manifest = format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  annotations:\n    \
             probe-gateway.kubevirt.io/probes: {}\n",
            serde_json::to_string(annotation).unwrap()
        );
        assert_eq!(from_hook, errors_of(&manifest));
        assert_eq!(from_hook.len(), 2, "{from_hook:?}");
    }

    #[test]
    fn a_vmi_whose_annotations_are_not_a_mapping_gets_one_error() {
        let vmi = br#"{"metadata": {"annotations": ["x"]}}"#;
        let errors = checks_from_vmi(vmi).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "metadata.annotations");
    }

    #[test]
    fn the_vsock_cid_comes_from_the_vmis_status() {
        assert_eq!(vsock_cid_of_vmi(&vmi_json(None)), Ok(3));
        let error = vsock_cid_of_vmi(br#"{"status": {}}"#).unwrap_err();
        assert!(error.starts_with("status.vsockCID: not set"), "{error}");
        let error = vsock_cid_of_vmi(br#"{"status": {"vsockCID": 2}}"#).unwrap_err();
        assert!(error.contains("is not a guest CID"), "{error}");
    }

    #[test]
    fn a_vmi_that_is_not_json_is_refused() {
        let errors = checks_from_vmi(b"<vmi/>").unwrap_err().to_string();
        assert!(errors.starts_with("the VMI is not JSON"), "{errors}");
    }

    #[test]
    fn one_parsed_vmi_answers_both_the_checks_and_the_vsock_cid() {
        let vmi = HookedVmi::parse(&vmi_json(Some("livenessProbe:\n  guestAgentPing: {}\n")));
        assert_eq!(
            vmi.checks().map(|file| file.liveness),
            Ok(Some(guest_agent_ping()))
        );
        assert_eq!(vmi.vsock_cid(), Ok(3));
    }

    #[test]
    fn the_vsock_cid_is_read_when_the_checks_are_refused() {
        let vmi = HookedVmi::parse(&vmi_json(None));
        assert!(vmi.checks().is_err());
        assert_eq!(vmi.vsock_cid(), Ok(3));
    }

    #[test]
    fn a_vmi_that_is_not_json_has_no_vsock_cid_and_says_why() {
        let error = vsock_cid_of_vmi(b"<vmi/>").unwrap_err();
        assert!(error.starts_with("is not JSON: "), "{error}");
    }

    #[test]
    fn a_vmi_that_is_not_an_object_has_no_vsock_cid_set() {
        let error = vsock_cid_of_vmi(b"[3]").unwrap_err();
        assert!(error.starts_with("status.vsockCID: not set"), "{error}");
        let errors = checks_from_vmi(b"[3]").unwrap_err().to_string();
        assert_eq!(
            errors,
            "the document must be a mapping (found a list); expected the VirtualMachineInstance \
             as a JSON object"
        );
    }
}
