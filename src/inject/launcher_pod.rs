//! The launcher pod's patch: the gateway as a native sidecar, and the compute container's
//! `virt-probe` exec probes pointed at it, in one JSON Patch built against the pod's JSON
//! as it came (paths into that JSON, values for what is added), never by re-serializing a
//! typed pod, which would drop the fields a typed struct does not know.
//!
//! The gateway container (docs/inject.md, "What the pod gets"):
//! - an init container with `restartPolicy: Always` (a native sidecar, Kubernetes 1.29+):
//!   kubelet restarts it if it ends, and stops it after compute; KubeVirt's pod-readiness
//!   and image-error checks look at main containers only, so it cannot hold the VM back;
//! - `virt-probe-gateway-libvirt serve` on the decided port, the checks read from the
//!   compute container's `virt-probe` lines (in `PROBE_GATEWAY_CONFIG_TEXT`), the domain
//!   `<namespace>_<vmi name>`;
//! - the pod's `libvirt-runtime` volume at `/var/run/libvirt`, as the compute container's
//!   user (107), every capability dropped, no privilege escalation, a read-only root;
//! - explicit requests and limits, equal when the pod is to be Guaranteed.
//!
//! On the plugin road the gateway is the default binary as a KubeVirt 1.9 plugin sidecar
//! (`serve --kubevirt-plugin`), with the pod's `kubevirt-plugin-sockets` volume (`subPath`
//! the plugin's name, as KubeVirt's policy demands) instead of libvirt's; a pod without that
//! volume (the `Plugins` gate off) is left alone with a warning.

use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value, json};

use super::decision::{Decision, Road};
use super::eligibility::Malformed;
use super::virt_probe::{self, NotVirtProbe, VirtProbeCheck, VirtProbeLine};
use std::time::Duration;

use crate::config::{self, InjectSettings, PROBES_ANNOTATION, ProbeKind, ProbeSpec, Quantity};
use crate::kubevirt::plugin;

/// The injected container's name.
pub(crate) const CONTAINER_NAME: &str = "probe-gateway";
/// The compute container, where KubeVirt renders the VMI's probes.
const COMPUTE: &str = "compute";
/// The launcher pod's volume holding libvirt's socket, and where compute mounts it.
const LIBVIRT_VOLUME: &str = "libvirt-runtime";
const LIBVIRT_MOUNT: &str = "/var/run/libvirt";
/// The libvirt gateway in the image (the libvirt road).
const LIBVIRT_GATEWAY_BINARY: &str = "/usr/local/bin/virt-probe-gateway-libvirt";
/// The default gateway in the image (the plugin road: it links no libvirt).
const GATEWAY_BINARY: &str = "/usr/local/bin/virt-probe-gateway";
/// The launcher pod's volume for plugin sockets (KubeVirt's `Plugins` gate only).
const PLUGIN_VOLUME: &str = "kubevirt-plugin-sockets";
/// The environment variable that carries the gateway's config to it.
pub(crate) const CONFIG_ENV: &str = "PROBE_GATEWAY_CONFIG_TEXT";
/// The downward API volume through which the gateway follows its pod's annotations (the
/// maintenance pause), the file in it, where it is mounted, and the variable naming it.
const PODINFO_VOLUME: &str = "probe-gateway-podinfo";
const PODINFO_ANNOTATIONS: &str = "annotations";
const PODINFO_MOUNT: &str = "/etc/probe-gateway/pod";
const POD_ANNOTATIONS_ENV: &str = "PROBE_GATEWAY_POD_ANNOTATIONS";
/// KubeVirt's annotation on launcher pods: the VMI's name.
const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
/// KubeVirt's annotation on its temporary provisioning pods (not a VM's launcher).
const EPHEMERAL_ANNOTATION: &str = "kubevirt.io/ephemeral-provisioning";

/// What the webhook does with a launcher pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PodOutcome {
    /// Patched: the patch and what it did, for the log.
    Injected { patch: Patch, summary: String },
    /// Left as it is, with nothing to say (already injected, not decided for injection).
    Unchanged(&'static str),
    /// Left as it is, and why, as a warning: it was decided for injection, or cannot be
    /// read.
    Skipped(String),
}

/// The outcome for the pod `pod` of namespace `namespace`.
pub(crate) fn inject(pod: &Value, namespace: &str, settings: &InjectSettings) -> PodOutcome {
    match plan(pod, namespace, settings) {
        Ok(outcome) => outcome,
        Err(malformed) => PodOutcome::Skipped(format!("cannot read the pod: {malformed}")),
    }
}

fn plan(pod: &Value, namespace: &str, settings: &InjectSettings) -> Result<PodOutcome, Malformed> {
    let pod = object(pod, "")?;
    let metadata = object_at(pod, "metadata", "")?;
    let annotations = match metadata.get("annotations") {
        None | Some(Value::Null) => Map::new(),
        Some(value) => object(value, "metadata.annotations")?.clone(),
    };
    // An annotation in KubeVirt (template.go); a label of that name is honoured too.
    let labels = metadata.get("labels").and_then(Value::as_object);
    if annotations.contains_key(EPHEMERAL_ANNOTATION)
        || labels.is_some_and(|labels| labels.contains_key(EPHEMERAL_ANNOTATION))
    {
        return Ok(PodOutcome::Unchanged("a temporary provisioning pod"));
    }
    let Some(decided) = annotations.get(&settings.decision_annotation) else {
        return Ok(PodOutcome::Unchanged("no decision on its VMI"));
    };
    let decision = match decided.as_str().map(Decision::from_annotation) {
        Some(Ok(decision)) => decision,
        Some(Err(error)) => {
            return Ok(PodOutcome::Skipped(format!(
                "the decision annotation {} is {error}",
                settings.decision_annotation
            )));
        }
        None => {
            return Err(malformed(
                &format!("metadata.annotations[{:?}]", settings.decision_annotation),
                "not a string",
            ));
        }
    };
    let Some(port) = decision.port.filter(|_| decision.inject) else {
        return Ok(PodOutcome::Unchanged(
            "its VMI was decided against injection",
        ));
    };
    let spec = object_at(pod, "spec", "")?;
    let containers = array_at(spec, "containers", "spec")?;
    let init_containers = array_at(spec, "initContainers", "spec")?;
    for (list, field) in [
        (containers, "containers"),
        (init_containers, "initContainers"),
    ] {
        for (i, container) in list.iter().enumerate() {
            let path = format!("spec.{field}[{i}]");
            if text_at(object(container, &path)?, "name", &path)? == CONTAINER_NAME {
                return Ok(PodOutcome::Unchanged("already injected"));
            }
        }
    }
    let skip = |why: String| Ok(PodOutcome::Skipped(why));
    let Some(compute_index) = containers
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some(COMPUTE))
    else {
        return skip("it has no compute container".into());
    };
    let compute_path = format!("spec.containers[{compute_index}]");
    let compute = object(&containers[compute_index], &compute_path)?;

    let Some(vmi_name) = annotations.get(DOMAIN_ANNOTATION).and_then(Value::as_str) else {
        return skip(format!(
            "it has no {DOMAIN_ANNOTATION} annotation naming its VMI"
        ));
    };
    let domain = format!("{namespace}_{vmi_name}");

    let road = decision.road.unwrap_or_default();
    let volumes = array_at(spec, "volumes", "spec")?;
    let has_volume = |name: &str| {
        volumes
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
    };
    match road {
        Road::Libvirt if !has_volume(LIBVIRT_VOLUME) => {
            return skip(format!(
                "it has no {LIBVIRT_VOLUME} volume, where libvirt's socket is"
            ));
        }
        Road::Plugin if !has_volume(PLUGIN_VOLUME) => {
            return skip(format!(
                "it has no {PLUGIN_VOLUME} volume: KubeVirt's Plugins feature gate, which the \
                 plugin road needs, is off"
            ));
        }
        _ => {}
    }

    let Some((uid, gid)) = compute_user(spec, compute, &compute_path)? else {
        return skip("cannot tell which user the compute container runs as".into());
    };
    if uid == 0 {
        return skip(
            "the VMI runs as root (KubeVirt's Root feature gate): libvirt's socket and the \
             private channel are then root's, and the gateway is not run as root"
                .into(),
        );
    }

    // The checks: the gateway's own annotation (copied from the VMI) first, then each
    // virt-probe exec probe of a kind the annotation leaves out.
    let mut gateway_config = Map::new();
    let mut from_annotation = None;
    if let Some(annotated) = annotations.get(PROBES_ANNOTATION) {
        let text = annotated.as_str().ok_or_else(|| {
            malformed(
                &format!("metadata.annotations[{PROBES_ANNOTATION:?}]"),
                "not a string",
            )
        })?;
        match config::read_probes_annotation(text) {
            Ok((file, document)) => {
                gateway_config = document;
                from_annotation = Some(file);
            }
            Err(errors) => {
                return skip(format!(
                    "its {PROBES_ANNOTATION} annotation is not valid: {}",
                    errors
                        .0
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }
    let annotated = |kind: ProbeKind| {
        from_annotation
            .as_ref()
            .and_then(|file| file.probe(kind))
            .cloned()
    };
    let mut from_lines = Vec::new();
    for kind in ProbeKind::KUBELET {
        let field = kind.field();
        if annotated(kind).is_some() {
            continue;
        }
        let Some(probe) = compute.get(field).filter(|p| !p.is_null()) else {
            continue;
        };
        let probe_path = format!("{compute_path}.{field}");
        let probe = object(probe, &probe_path)?;
        let Some(exec) = probe.get("exec").filter(|e| !e.is_null()) else {
            continue; // httpGet, tcpSocket: KubeVirt's own, left alone.
        };
        let command = strings_at(
            object(exec, &format!("{probe_path}.exec"))?,
            "command",
            &format!("{probe_path}.exec"),
        )?;
        let line = match virt_probe::read(&command) {
            Ok(line) => line,
            Err(NotVirtProbe::OtherProgram) => continue,
            Err(NotVirtProbe::Unreadable(why)) => {
                return skip(format!("its {field} virt-probe line does not read: {why}"));
            }
        };
        if line.domain != domain {
            return skip(format!(
                "its {field} probes domain {:?}, not the VMI's {domain:?}",
                line.domain
            ));
        }
        gateway_config.insert(field.to_string(), check(&line));
        from_lines.push(kind);
    }
    let answered: Vec<ProbeKind> = ProbeKind::KUBELET
        .into_iter()
        .filter(|kind| annotated(*kind).is_some() || from_lines.contains(kind))
        .collect();
    if answered.is_empty() {
        return Ok(PodOutcome::Unchanged("no virt-probe probe to take over"));
    }

    // The plugin road's agent is the private channel the gateway adds at MutateDomain.
    if road == Road::Libvirt {
        gateway_config.insert("agent".into(), json!(format!("libvirt:{domain}")));
    }
    let background = gateway_config.get("mode").and_then(Value::as_str) == Some("background");
    if !background && !gateway_config.contains_key("minIntervalSeconds") {
        gateway_config.insert(
            "minIntervalSeconds".into(),
            json!(settings.min_interval_seconds),
        );
    }
    let config_text = Value::Object(gateway_config).to_string();
    // What the gateway will read, read now: a check it would refuse is not injected.
    let gateway_file = match config::parse_document(&config_text) {
        Ok(file) => file,
        Err(errors) => {
            return skip(format!(
                "the checks would not be valid for the gateway: {errors}"
            ));
        }
    };
    if has_volume(PODINFO_VOLUME) {
        return skip(format!(
            "it has a volume named {PODINFO_VOLUME} already, the name of the gateway's own"
        ));
    }

    let guaranteed = wants_guaranteed(compute, &compute_path)?;
    let container = gateway_container(
        settings,
        GatewayRun {
            road,
            port,
            uid,
            gid,
            config_text: &config_text,
            guaranteed,
        },
    );
    let mut operations = Vec::new();
    let add = |path: String, value: Value| {
        PatchOperation::Add(AddOperation {
            path: pointer(&path),
            value,
        })
    };
    if spec.get("initContainers").is_none_or(Value::is_null) {
        operations.push(add("/spec/initContainers".into(), json!([container])));
    } else {
        operations.push(add("/spec/initContainers/-".into(), container));
    }
    for kind in &answered {
        let probe = format!("/spec/containers/{compute_index}/{}", kind.field());
        match annotated(*kind) {
            // The annotation's probe: kubelet's probe made from its schedule.
            Some(spec) => operations.push(add(probe, kubelet_probe(*kind, &spec, port))),
            // A virt-probe line: its exec becomes an httpGet, its numbers stay.
            None => {
                operations.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(&format!("{probe}/exec")),
                }));
                operations.push(add(
                    format!("{probe}/httpGet"),
                    json!({"path": kind.route(), "port": port, "scheme": "HTTP"}),
                ));
            }
        }
    }
    if let Some(startup) = &gateway_file.startup {
        let grace = (road == Road::Plugin).then(|| {
            gateway_file
                .liveness_grace
                .unwrap_or(config::DEFAULT_LIVENESS_GRACE)
        });
        operations.push(add(
            format!("/spec/containers/{compute_index}/startupProbe"),
            kubelet_startup_probe(startup, grace, port),
        ));
    }
    // The pod's annotations for the gateway to follow (the maintenance pause).
    let podinfo = json!({
        "name": PODINFO_VOLUME,
        "downwardAPI": {"items": [{
            "path": PODINFO_ANNOTATIONS,
            "fieldRef": {"fieldPath": "metadata.annotations"},
        }]},
    });
    if spec.get("volumes").is_none_or(Value::is_null) {
        operations.push(add("/spec/volumes".into(), json!([podinfo])));
    } else {
        operations.push(add("/spec/volumes/-".into(), podinfo));
    }
    let secrets = array_at(spec, "imagePullSecrets", "spec")?;
    let missing: Vec<&String> = settings
        .image_pull_secrets
        .iter()
        .filter(|name| {
            !secrets
                .iter()
                .any(|s| s.get("name").and_then(Value::as_str) == Some(name.as_str()))
        })
        .collect();
    if spec.get("imagePullSecrets").is_none_or(Value::is_null) && !missing.is_empty() {
        let all: Vec<Value> = missing.iter().map(|name| json!({"name": name})).collect();
        operations.push(add("/spec/imagePullSecrets".into(), Value::Array(all)));
    } else {
        for name in missing {
            operations.push(add(
                "/spec/imagePullSecrets/-".into(),
                json!({"name": name}),
            ));
        }
    }
    let mut probes: Vec<&str> = answered.iter().map(|kind| kind.as_str()).collect();
    if gateway_file.startup.is_some() {
        probes.push("startup");
    }
    Ok(PodOutcome::Injected {
        patch: Patch(operations),
        summary: format!(
            "the gateway answers its {} probe on port {port} for domain {domain}, by the {} road",
            super::eligibility::listed(&probes),
            road.as_str()
        ),
    })
}

/// The gateway config's probe for a virt-probe line: its check and timeout. kubelet keeps
/// the pod probe's own period, thresholds and (1 s longer) timeout.
fn check(line: &VirtProbeLine) -> Value {
    let handler = match &line.check {
        VirtProbeCheck::GuestAgentPing => json!({"guestAgentPing": {}}),
        VirtProbeCheck::Exec(command) => json!({"exec": {"command": command}}),
    };
    let mut probe = handler;
    probe["timeoutSeconds"] = json!(line.timeout_seconds);
    probe
}

/// Kubelet's probe of `kind` for a probe the annotation gives: the gateway's route, the
/// probe's schedule, and a timeout one second longer than its longest check (as KubeVirt
/// gives a virt-probe probe), since the gateway answers within it plus 0.5 s.
fn kubelet_probe(kind: ProbeKind, spec: &ProbeSpec, port: u16) -> Value {
    json!({
        "httpGet": {"path": kind.route(), "port": port, "scheme": "HTTP"},
        "initialDelaySeconds": spec.initial_delay_seconds,
        "timeoutSeconds": spec.longest_timeout().as_secs() + 1,
        "periodSeconds": spec.period_seconds,
        "successThreshold": spec.success_threshold,
        "failureThreshold": spec.failure_threshold,
    })
}

/// The time kubelet's startup probe allows beyond the gateway's own count: the gateway's
/// start and the domain's definition, during which the gateway does not count failures.
const STARTUP_ALLOWANCE_SECONDS: u64 = 60;

/// Kubelet's startup probe on compute: `/started`, which only reads the gateway's state, on
/// the startup probe's period, for long enough that the gateway decides first: its initial
/// delay, `failureThreshold` periods and a check's timeout, [`STARTUP_ALLOWANCE_SECONDS`],
/// and on the plugin road (where the gateway cannot see the domain's state and does not
/// count failures of an agent that never answered within the liveness grace) that grace.
fn kubelet_startup_probe(spec: &ProbeSpec, grace: Option<Duration>, port: u16) -> Value {
    let period = u64::from(spec.period_seconds.max(1));
    let window = u64::from(spec.initial_delay_seconds)
        + u64::from(spec.failure_threshold) * period
        + spec.longest_timeout().as_secs()
        + STARTUP_ALLOWANCE_SECONDS
        + grace.map_or(0, |grace| grace.as_secs());
    let failures = window
        .div_ceil(period)
        .min(u64::from(i32::MAX.unsigned_abs()));
    json!({
        "httpGet": {"path": ProbeKind::Startup.route(), "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": failures,
    })
}

/// How the gateway container runs.
struct GatewayRun<'a> {
    road: Road,
    port: u16,
    uid: i64,
    gid: i64,
    config_text: &'a str,
    guaranteed: bool,
}

fn gateway_container(settings: &InjectSettings, run: GatewayRun<'_>) -> Value {
    let resources = &settings.resources;
    let requests = if run.guaranteed {
        &resources.limits
    } else {
        &resources.requests
    };
    let quantity = |q: &Quantity| json!(q.as_str());
    let listen = format!("[::]:{}", run.port);
    let (command, args, mount) = match run.road {
        Road::Libvirt => (
            LIBVIRT_GATEWAY_BINARY,
            json!(["serve", "--listen", listen, "--log-format", "json"]),
            json!({"name": LIBVIRT_VOLUME, "mountPath": LIBVIRT_MOUNT}),
        ),
        Road::Plugin => {
            let socket = plugin::DEFAULT_PLUGIN_SOCKET;
            let dir = socket.rsplit_once('/').map_or(socket, |(dir, _)| dir);
            (
                GATEWAY_BINARY,
                json!([
                    "serve",
                    "--kubevirt-plugin",
                    "--plugin-socket",
                    socket,
                    "--listen",
                    listen,
                    "--log-format",
                    "json"
                ]),
                // KubeVirt's policy: the plugin volume only with a subPath, the plugin's own
                // directory, mounted where compute sees it too.
                json!({"name": PLUGIN_VOLUME, "mountPath": dir, "subPath": plugin::PLUGIN_NAME}),
            )
        }
    };
    json!({
        "name": CONTAINER_NAME,
        "image": settings.image.as_str(),
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": [command],
        "args": args,
        "env": [
            {"name": CONFIG_ENV, "value": run.config_text},
            {"name": POD_ANNOTATIONS_ENV, "value": format!("{PODINFO_MOUNT}/{PODINFO_ANNOTATIONS}")},
        ],
        "ports": [{"name": CONTAINER_NAME, "containerPort": run.port, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": quantity(&requests.cpu), "memory": quantity(&requests.memory)},
            "limits": {"cpu": quantity(&resources.limits.cpu), "memory": quantity(&resources.limits.memory)},
        },
        "securityContext": {
            "runAsUser": run.uid,
            "runAsGroup": run.gid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [mount, {"name": PODINFO_VOLUME, "mountPath": PODINFO_MOUNT, "readOnly": true}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

/// The compute container's user and group (its own security context, else the pod's); a
/// missing group is the user's, as KubeVirt sets both to 107.
fn compute_user(
    spec: &Map<String, Value>,
    compute: &Map<String, Value>,
    compute_path: &str,
) -> Result<Option<(i64, i64)>, Malformed> {
    let read =
        |context: Option<&Value>, path: &str, field: &str| -> Result<Option<i64>, Malformed> {
            let Some(context) = context.filter(|c| !c.is_null()) else {
                return Ok(None);
            };
            match object(context, path)?.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => value
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| malformed(&format!("{path}.{field}"), "not an integer")),
            }
        };
    let own = compute.get("securityContext");
    let own_path = format!("{compute_path}.securityContext");
    let pods = spec.get("securityContext");
    let uid = match read(own, &own_path, "runAsUser")? {
        Some(uid) => Some(uid),
        None => read(pods, "spec.securityContext", "runAsUser")?,
    };
    let gid = match read(own, &own_path, "runAsGroup")? {
        Some(gid) => Some(gid),
        None => read(pods, "spec.securityContext", "runAsGroup")?,
    };
    Ok(uid.map(|uid| (uid, gid.unwrap_or(uid))))
}

/// Whether the pod is meant to be Guaranteed: KubeVirt gives compute requests equal to
/// limits (cpu and memory) exactly when the VMI has dedicated CPUs or wants Guaranteed QoS,
/// and then every container must have them equal, or the VMI fails to start.
fn wants_guaranteed(compute: &Map<String, Value>, path: &str) -> Result<bool, Malformed> {
    let Some(resources) = compute.get("resources").filter(|r| !r.is_null()) else {
        return Ok(false);
    };
    let path = format!("{path}.resources");
    let resources = object(resources, &path)?;
    let side = |name: &str, resource: &str| -> Result<Option<Quantity>, Malformed> {
        let Some(side) = resources.get(name).filter(|s| !s.is_null()) else {
            return Ok(None);
        };
        let side = object(side, &format!("{path}.{name}"))?;
        match side.get(resource) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => {
                let text = value.as_str().ok_or_else(|| {
                    malformed(&format!("{path}.{name}.{resource}"), "not a string")
                })?;
                Quantity::parse(text)
                    .map(Some)
                    .map_err(|why| malformed(&format!("{path}.{name}.{resource}"), &why))
            }
        }
    };
    for resource in ["cpu", "memory"] {
        match (side("requests", resource)?, side("limits", resource)?) {
            (Some(request), Some(limit)) if request == limit => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// `path` as a JSON Pointer (its segments are already escaped where needed).
fn pointer(path: &str) -> PointerBuf {
    PointerBuf::parse(path).unwrap_or_default()
}

fn malformed(path: &str, what: &str) -> Malformed {
    Malformed {
        path: if path.is_empty() {
            "the object".into()
        } else {
            path.to_string()
        },
        what: what.to_string(),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Malformed> {
    value
        .as_object()
        .ok_or_else(|| malformed(path, "not an object"))
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn object_at<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<&'a Map<String, Value>, Malformed> {
    match map.get(field) {
        Some(value) => object(value, &join(path, field)),
        None => Err(malformed(&join(path, field), "missing")),
    }
}

fn array_at<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<&'a [Value], Malformed> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(malformed(&join(path, field), "not a list")),
    }
}

fn text_at<'a>(map: &'a Map<String, Value>, field: &str, path: &str) -> Result<&'a str, Malformed> {
    map.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(&join(path, field), "not a string"))
}

fn strings_at(map: &Map<String, Value>, field: &str, path: &str) -> Result<Vec<String>, Malformed> {
    let items = array_at(map, field, path)?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| malformed(&format!("{}[{i}]", join(path, field)), "not a string"))
        })
        .collect()
}
