//! One AdmissionReview (`admission.k8s.io/v1`): read, dispatched on the request's kind,
//! answered. The webhook never denies: what it cannot handle, a malformed object
//! included, is allowed unchanged with a warning and a log line. Only a body that is not an
//! AdmissionReview at all is refused, with 400 and what is wrong
//! ([`BadReview`]).
//!
//! - `VirtualMachine` CREATE/UPDATE: the decision for its template, as a warning to the
//!   one applying it (`kubectl apply` prints it); the VM itself is not changed.
//! - `VirtualMachineInstance` CREATE/UPDATE: the decision written into the decision
//!   annotation, whatever value was there (a user must not be able to mark a bridge VM
//!   eligible and have it killed), and as a warning.
//! - `Pod` CREATE: a virt-launcher pod whose VMI was decided for injection gets the gateway
//!   ([`super::launcher_pod`]).

use base64::Engine as _;
use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Map, Value, json};

use super::decision::{Decision, Road};
use super::eligibility::{self, Eligibility, Malformed};
use super::launcher_pod::{self, PodOutcome};
use crate::config::InjectSettings;

/// The only AdmissionReview version served (the webhook configuration asks for it).
const API_VERSION: &str = "admission.k8s.io/v1";
/// Every warning starts so, for the reader of `kubectl apply`'s output.
const WARNING_PREFIX: &str = "virt-probe-gateway: ";

/// A request body that is not an AdmissionReview this webhook can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadReview {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("not an {API_VERSION} AdmissionReview: {0}")]
    NotAReview(String),
}

/// What became of one review, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handled {
    /// `VirtualMachine`, `VirtualMachineInstance`, `Pod`, or `other`.
    pub kind: &'static str,
    pub operation: &'static str,
    pub outcome: Outcome,
    /// The object's namespace/name (or generateName), for the log.
    pub object: String,
    /// What was done, or why not.
    pub detail: String,
}

/// The metric label of a review's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A patch was returned.
    Patched,
    /// Nothing to change (already handled, not concerned).
    Unchanged,
    /// Left unchanged for a reason worth a warning.
    Skipped,
    /// The object could not be read: allowed unchanged.
    Malformed,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Malformed => "malformed",
        }
    }
}

/// Answers the review in `body`: the response document, and what was done. `road` is the
/// namespace's, by the path the review came on (`/mutate`: libvirt, `/mutate/plugin`:
/// plugin), for the VMs and VMIs that name none.
pub(crate) fn review(
    body: &[u8],
    settings: &InjectSettings,
    road: Road,
) -> Result<(Vec<u8>, Handled), BadReview> {
    let (request, object) = read(body)?;
    let kind = request.kind.kind.as_str();
    let group = request.kind.group.as_str();
    let operation = operation_name(&request.operation);
    let shown = object
        .as_ref()
        .map(|o| shown_name(o, &request))
        .unwrap_or_default();
    let mut handled = Handled {
        kind: "other",
        operation,
        outcome: Outcome::Unchanged,
        object: shown,
        detail: String::new(),
    };
    let (patch, warnings) = match (group, kind, &request.operation, &object) {
        ("kubevirt.io", "VirtualMachine", Operation::Create | Operation::Update, Some(vm)) => {
            handled.kind = "VirtualMachine";
            on_vm(vm, settings, road, &mut handled)
        }
        (
            "kubevirt.io",
            "VirtualMachineInstance",
            Operation::Create | Operation::Update,
            Some(vmi),
        ) => {
            handled.kind = "VirtualMachineInstance";
            on_vmi(vmi, settings, road, &mut handled)
        }
        ("", "Pod", Operation::Create, Some(pod)) => {
            handled.kind = "Pod";
            let namespace = request.namespace.as_deref().unwrap_or_default();
            on_pod(pod, namespace, settings, &mut handled)
        }
        _ => {
            handled.detail = format!("not handled: {operation} of {group}/{kind}");
            (None, Vec::new())
        }
    };
    let mut response = AdmissionResponse::from(&request);
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if let Some(patch) = patch {
        response = match response.with_patch(patch) {
            Ok(response) => response,
            Err(error) => {
                // A JSON patch of plain values always serializes; if one did not, the
                // object is admitted unchanged, as for anything the webhook cannot do.
                handled.outcome = Outcome::Skipped;
                handled.detail = format!("the patch could not be serialized: {error}");
                AdmissionResponse::from(&request)
            }
        };
    }
    Ok((encode(response), handled))
}

/// The response document. The patch is base64 text, as Kubernetes documents it (kube's
/// type would write its bytes as a list of numbers, which Go also reads, but no
/// documentation shows).
fn encode(response: AdmissionResponse) -> Vec<u8> {
    let mut document = serde_json::to_value(response.into_review()).unwrap_or_default();
    if let Some(response) = document.get_mut("response")
        && let Some(patch) = response.get("patch").and_then(Value::as_array)
    {
        let bytes: Vec<u8> = patch
            .iter()
            .filter_map(Value::as_u64)
            .filter_map(|b| u8::try_from(b).ok())
            .collect();
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&document).unwrap_or_default()
}

/// The review's request, and its object as the JSON it came as (`None` if absent). The
/// object is taken out before the request is read into kube's types, so that an object
/// the types would refuse is still answered (allowed, with a warning), not a 400.
fn read(body: &[u8]) -> Result<(AdmissionRequest<DynamicObject>, Option<Value>), BadReview> {
    let mut document: Value =
        serde_json::from_slice(body).map_err(|error| BadReview::NotJson(error.to_string()))?;
    let Some(fields) = document.as_object_mut() else {
        return Err(BadReview::NotAReview(
            "the body is not a JSON object".into(),
        ));
    };
    match fields.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(BadReview::NotAReview(format!(
                "apiVersion is {other:?}; this webhook serves {API_VERSION} only"
            )));
        }
        None => return Err(BadReview::NotAReview("apiVersion is missing".into())),
    }
    if fields.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(BadReview::NotAReview("kind is not AdmissionReview".into()));
    }
    let object = match fields.get_mut("request").and_then(Value::as_object_mut) {
        Some(request) => {
            // Read as raw JSON here; kube's types are not asked to read any object.
            request.remove("oldObject");
            request.remove("options");
            request.remove("object").filter(|o| !o.is_null())
        }
        None => return Err(BadReview::NotAReview("request is missing".into())),
    };
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(document)
        .map_err(|error| BadReview::NotAReview(format!("request: {error}")))?;
    let request: AdmissionRequest<DynamicObject> =
        review
            .try_into()
            .map_err(|error: kube_core::admission::ConvertAdmissionReviewError| {
                BadReview::NotAReview(error.to_string())
            })?;
    if request.uid.is_empty() {
        return Err(BadReview::NotAReview("request.uid is empty".into()));
    }
    Ok((request, object))
}

type Answer = (Option<Patch>, Vec<String>);

fn on_vm(vm: &Value, settings: &InjectSettings, road: Road, handled: &mut Handled) -> Answer {
    let template = vm.pointer("/spec/template");
    let empty = Map::new();
    let own = vm
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let templates = template
        .and_then(|t| t.pointer("/metadata/annotations"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let Some(spec) = template.and_then(|t| t.get("spec")) else {
        return malformed(
            handled,
            &Malformed {
                path: "spec.template.spec".into(),
                what: "missing".into(),
            },
        );
    };
    match eligibility::decide(spec, &[templates, own], road, settings) {
        Ok(Eligibility::NoProbes) => {
            handled.detail = "no exec or guestAgentPing probe".into();
            (None, Vec::new())
        }
        Ok(Eligibility::Decided(decision)) => {
            handled.outcome = if decision.inject {
                Outcome::Unchanged
            } else {
                Outcome::Skipped
            };
            handled.detail.clone_from(&decision.reason);
            (None, vec![warning_for(&decision)])
        }
        Err(error) => malformed(handled, &error.under("spec.template.")),
    }
}

fn on_vmi(vmi: &Value, settings: &InjectSettings, road: Road, handled: &mut Handled) -> Answer {
    let Some(spec) = vmi.get("spec") else {
        return malformed(
            handled,
            &Malformed {
                path: "spec".into(),
                what: "missing".into(),
            },
        );
    };
    let annotations = match vmi.pointer("/metadata/annotations") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(_) => {
            return malformed(
                handled,
                &Malformed {
                    path: "metadata.annotations".into(),
                    what: "not an object".into(),
                },
            );
        }
    };
    let empty = Map::new();
    // Without probes to take over there is nothing to tell the owner, but the annotation
    // is still written: a value set by hand must not reach the pods.
    let (decision, warnings) =
        match eligibility::decide(spec, &[annotations.unwrap_or(&empty)], road, settings) {
            Ok(Eligibility::Decided(decision)) => {
                let warnings = vec![warning_for(&decision)];
                (decision, warnings)
            }
            Ok(Eligibility::NoProbes) => (
                Decision::skip("no exec or guestAgentPing probe"),
                Vec::new(),
            ),
            Err(error) => return malformed(handled, &error.under("")),
        };
    let value = decision.to_annotation();
    let key = &settings.decision_annotation;
    let current = annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    handled.detail.clone_from(&decision.reason);
    if current == Some(value.as_str()) {
        handled.outcome = Outcome::Unchanged;
        return (None, warnings);
    }
    let operation = match annotations {
        Some(_) => add(
            &format!("/metadata/annotations/{}", escape(key)),
            json!(value),
        ),
        None => add("/metadata/annotations", json!({ key.as_str(): value })),
    };
    handled.outcome = Outcome::Patched;
    if current.is_some() {
        handled.detail = format!("{} (the value that was there is replaced)", decision.reason);
    }
    (Some(Patch(vec![operation])), warnings)
}

fn on_pod(
    pod: &Value,
    namespace: &str,
    settings: &InjectSettings,
    handled: &mut Handled,
) -> Answer {
    match launcher_pod::inject(pod, namespace, settings) {
        PodOutcome::Injected { patch, summary } => {
            handled.outcome = Outcome::Patched;
            handled.detail = summary;
            (Some(patch), Vec::new())
        }
        PodOutcome::Unchanged(why) => {
            handled.detail = why.to_string();
            (None, Vec::new())
        }
        PodOutcome::Skipped(why) => {
            handled.outcome = Outcome::Skipped;
            let warning = format!("{WARNING_PREFIX}launcher pod keeps the stock probes: {why}");
            handled.detail = why;
            (None, vec![warning])
        }
    }
}

fn malformed(handled: &mut Handled, error: &Malformed) -> Answer {
    handled.outcome = Outcome::Malformed;
    handled.detail = format!("cannot read the object: {error}");
    (
        None,
        vec![format!("{WARNING_PREFIX}not handled, {}", handled.detail)],
    )
}

fn warning_for(decision: &Decision) -> String {
    if decision.inject {
        format!("{WARNING_PREFIX}{}", decision.reason)
    } else {
        format!("{WARNING_PREFIX}stock probes kept: {}", decision.reason)
    }
}

impl Malformed {
    /// The same error with its path under `prefix` (a VM's template).
    fn under(&self, prefix: &str) -> Malformed {
        Malformed {
            path: format!("{prefix}{}", self.path),
            what: self.what.clone(),
        }
    }
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::parse(path).unwrap_or_default(),
        value,
    })
}

/// A JSON Pointer segment for `key` (RFC 6901: `~` is `~0`, `/` is `~1`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// `namespace/name` of the object, or `namespace/generateName*` for a pod not named yet.
fn shown_name(object: &Value, request: &AdmissionRequest<DynamicObject>) -> String {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    let generated = metadata
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str);
    match (name, generated) {
        (Some(name), _) => format!("{namespace}/{name}"),
        (None, Some(prefix)) => format!("{namespace}/{prefix}*"),
        (None, None) => format!("{namespace}/?"),
    }
}
