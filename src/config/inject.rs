//! The admission webhook's settings (`inject --config FILE`, and flags): what it puts into
//! launcher pods. Read with the same walk as the gateway's config, so every problem is
//! reported at once with its field path, and resolved into [`InjectSettings`], which the
//! webhook uses without checking anything again.

use serde_json::{Map, Value};

use super::quantity::Quantity;
use super::syntax::read_syntax;
use super::walk::{
    Errors, FieldPath, document_mapping, expect_mapping, in_range, integer, read_field, set_value,
    string, unknown_field_message, unknown_fields,
};
use super::{ConfigError, ConfigErrors};

/// The gateway's port in launcher pods when none is set: outside the ports VMs commonly
/// forward (22, 80, 443, 8080), and checked against each VMI's.
pub(crate) const DEFAULT_PORT: u16 = 8190;
/// `minIntervalSeconds` of injected gateways when none is set: a caller of the pod IP gets
/// a result at most this old instead of a command in the guest per request.
pub(crate) const DEFAULT_MIN_INTERVAL_SECONDS: u32 = 1;
/// Where the injector writes its decision on a VMI (and so on its pods).
pub(crate) const DEFAULT_DECISION_ANNOTATION: &str = "probe-gateway.kubevirt.io/decision";
/// The annotation with which a VM or VMI opts out (value `"false"`).
pub(crate) const DEFAULT_OPT_OUT_ANNOTATION: &str = "probe-gateway.kubevirt.io/inject";
/// The annotation with which a VM or VMI chooses its road (`libvirt` or `plugin`) over its
/// namespace's.
pub(crate) const DEFAULT_ROAD_ANNOTATION: &str = "probe-gateway.kubevirt.io/road";

const FIELDS: &[&str] = &[
    "image",
    "port",
    "minIntervalSeconds",
    "resources",
    "imagePullSecrets",
    "decisionAnnotation",
    "optOutAnnotation",
    "roadAnnotation",
];

/// CPU and memory of one side (requests or limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuMemory {
    pub cpu: Quantity,
    pub memory: Quantity,
}

/// The gateway container's requests and limits. With dedicated CPUs or Guaranteed QoS
/// wanted, the pod must stay Guaranteed: the injector then gives requests = limits, as
/// KubeVirt does for its own support containers (`renderresources.go`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewayResources {
    pub requests: CpuMemory,
    pub limits: CpuMemory,
}

impl Default for GatewayResources {
    /// Measured: the libvirt gateway holds about 24 MiB (RSS, its libraries' pages
    /// included) and spends about 0.5 ms of CPU per probe (BENCHMARKS.md).
    fn default() -> Self {
        const MI: i128 = 1 << 20;
        const NANO: i128 = 1_000_000_000;
        GatewayResources {
            requests: CpuMemory {
                cpu: Quantity::known("5m", 5_000_000),
                memory: Quantity::known("32Mi", 32 * MI * NANO),
            },
            limits: CpuMemory {
                cpu: Quantity::known("100m", 100_000_000),
                memory: Quantity::known("64Mi", 64 * MI * NANO),
            },
        }
    }
}

/// An image named by digest (`REPOSITORY@sha256:HEX`), so every launcher pod runs the same
/// gateway whatever a tag points to by then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageByDigest(String);

impl ImageByDigest {
    pub(crate) fn parse(text: &str) -> Result<ImageByDigest, String> {
        let wrong = || {
            format!(
                "must name the image by digest, REPOSITORY@sha256:<64 hex digits> (found {text:?}), \
                 so that every launcher pod runs the same gateway"
            )
        };
        let (repository, digest) = text.split_once('@').ok_or_else(wrong)?;
        let hex = digest.strip_prefix("sha256:").ok_or_else(wrong)?;
        let repository_ok = !repository.is_empty()
            && repository
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c));
        let hex_ok = hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        if repository_ok && hex_ok {
            Ok(ImageByDigest(text.to_string()))
        } else {
            Err(wrong())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the settings file holds; unset fields are `None` (flags win, defaults come last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InjectFile {
    pub image: Option<ImageByDigest>,
    pub port: Option<u16>,
    pub min_interval_seconds: Option<u32>,
    pub resources: Option<GatewayResources>,
    pub image_pull_secrets: Option<Vec<String>>,
    pub decision_annotation: Option<String>,
    pub opt_out_annotation: Option<String>,
    pub road_annotation: Option<String>,
    /// Single quantities over `resources` (the command line's `--requests-cpu`, ...).
    pub resource_flags: ResourceFlags,
}

/// The gateway's quantities set one by one (flags), over the file's `resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResourceFlags {
    pub requests_cpu: Option<Quantity>,
    pub requests_memory: Option<Quantity>,
    pub limits_cpu: Option<Quantity>,
    pub limits_memory: Option<Quantity>,
}

/// The webhook's settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InjectSettings {
    pub image: ImageByDigest,
    pub port: u16,
    pub min_interval_seconds: u32,
    pub resources: GatewayResources,
    pub image_pull_secrets: Vec<String>,
    pub decision_annotation: String,
    pub opt_out_annotation: String,
    pub road_annotation: String,
}

impl InjectSettings {
    /// The file's settings under the flags' (`flags` is an [`InjectFile`] too: what the
    /// command line set), with defaults for the rest; `image` has no default.
    pub(crate) fn resolve(
        file: InjectFile,
        flags: InjectFile,
    ) -> Result<InjectSettings, ConfigErrors> {
        let image = flags.image.or(file.image).ok_or_else(|| {
            ConfigErrors(vec![ConfigError {
                path: "image".into(),
                message: "is required (--image or the settings file's image): the gateway \
                          image, by digest"
                    .into(),
            }])
        })?;
        Ok(InjectSettings {
            image,
            port: flags.port.or(file.port).unwrap_or(DEFAULT_PORT),
            min_interval_seconds: flags
                .min_interval_seconds
                .or(file.min_interval_seconds)
                .unwrap_or(DEFAULT_MIN_INTERVAL_SECONDS),
            resources: resources(
                flags.resources.or(file.resources).unwrap_or_default(),
                &flags.resource_flags,
            )?,
            image_pull_secrets: flags
                .image_pull_secrets
                .or(file.image_pull_secrets)
                .unwrap_or_default(),
            decision_annotation: flags
                .decision_annotation
                .or(file.decision_annotation)
                .unwrap_or_else(|| DEFAULT_DECISION_ANNOTATION.to_string()),
            opt_out_annotation: flags
                .opt_out_annotation
                .or(file.opt_out_annotation)
                .unwrap_or_else(|| DEFAULT_OPT_OUT_ANNOTATION.to_string()),
            road_annotation: flags
                .road_annotation
                .or(file.road_annotation)
                .unwrap_or_else(|| DEFAULT_ROAD_ANNOTATION.to_string()),
        })
    }
}

/// `base` with the quantities the command line sets, checked again: a request above its
/// limit would make an invalid pod.
fn resources(
    mut base: GatewayResources,
    flags: &ResourceFlags,
) -> Result<GatewayResources, ConfigErrors> {
    for (flag, target) in [
        (&flags.requests_cpu, &mut base.requests.cpu),
        (&flags.requests_memory, &mut base.requests.memory),
        (&flags.limits_cpu, &mut base.limits.cpu),
        (&flags.limits_memory, &mut base.limits.memory),
    ] {
        if let Some(quantity) = flag {
            *target = quantity.clone();
        }
    }
    let mut errors = Vec::new();
    for (name, request, limit) in [
        ("cpu", &base.requests.cpu, &base.limits.cpu),
        ("memory", &base.requests.memory, &base.limits.memory),
    ] {
        if request > limit {
            errors.push(ConfigError {
                path: format!("resources.requests.{name}"),
                message: format!(
                    "must not exceed limits.{name} ({request} > {limit}, flags and file \
                     together): the pod would be invalid"
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(base)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads a settings file (YAML or JSON): every problem, each with its field path.
pub(crate) fn parse_inject_file(text: &str) -> Result<InjectFile, ConfigErrors> {
    let mut errors = Errors::default();
    let root = FieldPath::root();
    let file = match read_syntax(text) {
        Ok(value) => document_mapping(&value, &root, "the injector's settings", &mut errors)
            .map(|map| read_inject_file(map, &mut errors)),
        Err(error) => {
            errors.add(&root, error.to_string());
            None
        }
    };
    errors.finish_with(file)
}

fn read_inject_file(map: &Map<String, Value>, errors: &mut Errors) -> InjectFile {
    let root = FieldPath::root();
    for key in unknown_fields(map, FIELDS) {
        errors.add(&root.field(key), unknown_field_message(key, FIELDS));
    }
    InjectFile {
        image: read_field(map, &root, "image", errors, |v| {
            string(v).and_then(ImageByDigest::parse)
        }),
        port: read_field(map, &root, "port", errors, read_port),
        min_interval_seconds: read_field(map, &root, "minIntervalSeconds", errors, |v| {
            read_min_interval(v)
        }),
        resources: set_value(map, "resources")
            .and_then(|value| read_resources(value, &root.field("resources"), errors)),
        image_pull_secrets: set_value(map, "imagePullSecrets")
            .and_then(|value| read_pull_secrets(value, &root.field("imagePullSecrets"), errors)),
        decision_annotation: read_field(map, &root, "decisionAnnotation", errors, |v| {
            string(v).and_then(annotation_key)
        }),
        opt_out_annotation: read_field(map, &root, "optOutAnnotation", errors, |v| {
            string(v).and_then(annotation_key)
        }),
        road_annotation: read_field(map, &root, "roadAnnotation", errors, |v| {
            string(v).and_then(annotation_key)
        }),
        resource_flags: ResourceFlags::default(),
    }
}

pub(crate) fn read_port(value: &Value) -> Result<u16, String> {
    integer(value)
        .and_then(|n| in_range(n, 1, 65535))
        .map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

fn read_min_interval(value: &Value) -> Result<u32, String> {
    integer(value)
        .and_then(|n| in_range(n, 0, 3600))
        .map(|n| u32::try_from(n).unwrap_or(0))
}

fn read_resources(
    value: &Value,
    path: &FieldPath,
    errors: &mut Errors,
) -> Option<GatewayResources> {
    let map = expect_mapping(value, path, errors)?;
    for key in unknown_fields(map, &["requests", "limits"]) {
        errors.add(
            &path.field(key),
            unknown_field_message(key, &["requests", "limits"]),
        );
    }
    let mut side = |name: &str| -> Option<CpuMemory> {
        let path = path.field(name);
        let Some(value) = set_value(map, name) else {
            errors.add(
                &path,
                "is required: the gateway always has explicit requests and limits (cpu and \
                 memory), so that namespace quotas accept its pod",
            );
            return None;
        };
        let side = expect_mapping(value, &path, errors)?;
        for key in unknown_fields(side, &["cpu", "memory"]) {
            errors.add(
                &path.field(key),
                unknown_field_message(key, &["cpu", "memory"]),
            );
        }
        let mut quantity = |name: &str| match set_value(side, name) {
            Some(_) => read_field(side, &path, name, errors, read_quantity),
            None => {
                errors.add(&path.field(name), "is required");
                None
            }
        };
        let (cpu, memory) = (quantity("cpu"), quantity("memory"));
        Some(CpuMemory {
            cpu: cpu?,
            memory: memory?,
        })
    };
    let (requests, limits) = (side("requests"), side("limits"));
    let (requests, limits) = (requests?, limits?);
    let mut fits = true;
    for (name, request, limit) in [
        ("cpu", &requests.cpu, &limits.cpu),
        ("memory", &requests.memory, &limits.memory),
    ] {
        if request > limit {
            fits = false;
            errors.add(
                &path.field("requests").field(name),
                format!(
                    "must not exceed limits.{name} ({request} > {limit}): the pod would be invalid"
                ),
            );
        }
    }
    fits.then_some(GatewayResources { requests, limits })
}

/// A quantity, as a string (`64Mi`) or, as Kubernetes accepts, a plain number (`1`, `0.5`).
fn read_quantity(value: &Value) -> Result<Quantity, String> {
    match value {
        Value::Number(number) => Quantity::parse(&number.to_string()),
        other => string(other).and_then(Quantity::parse),
    }
}

fn read_pull_secrets(value: &Value, path: &FieldPath, errors: &mut Errors) -> Option<Vec<String>> {
    let Value::Array(items) = value else {
        errors.add(path, "must be a list of secret names");
        return None;
    };
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(name) = errors.keep(&path.index(i), string(item).and_then(object_name)) {
            names.push(name);
        }
    }
    (names.len() == items.len()).then_some(names)
}

/// A Kubernetes object name (a DNS subdomain: lower-case alphanumerics, `-` and `.`).
pub(crate) fn object_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.')"
        ))
    }
}

/// An annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric).
pub(crate) fn annotation_key(text: &str) -> Result<String, String> {
    let (prefix, name) = match text.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, text),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| object_name(p).is_ok());
    if name_ok && prefix_ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an annotation key (PREFIX/NAME, e.g. {DEFAULT_DECISION_ANNOTATION})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "registry.example/virt-probe-gateway@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn errors(text: &str) -> Vec<String> {
        parse_inject_file(text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_full_file_reads_and_flags_win_over_it() {
        let file = parse_inject_file(&format!(
            "image: {DIGEST}\nport: 9000\nminIntervalSeconds: 2\nresources:\n  requests: {{cpu: 10m, memory: 40Mi}}\n  limits: {{cpu: 200m, memory: 80Mi}}\nimagePullSecrets: [regcred]\ndecisionAnnotation: example.com/decision\noptOutAnnotation: example.com/inject\n"
        ))
        .unwrap();
        assert_eq!(file.port, Some(9000));
        assert_eq!(
            file.resources.as_ref().unwrap().limits.memory.as_str(),
            "80Mi"
        );
        let flags = InjectFile {
            port: Some(9100),
            ..InjectFile::default()
        };
        let settings = InjectSettings::resolve(file, flags).unwrap();
        assert_eq!(settings.port, 9100);
        assert_eq!(settings.min_interval_seconds, 2);
        assert_eq!(settings.image_pull_secrets, ["regcred"]);
        assert_eq!(settings.decision_annotation, "example.com/decision");
    }

    #[test]
    fn defaults_fill_what_is_not_set_but_the_image_is_required() {
        let settings = InjectSettings::resolve(
            InjectFile::default(),
            InjectFile {
                image: Some(ImageByDigest::parse(DIGEST).unwrap()),
                ..InjectFile::default()
            },
        )
        .unwrap();
        assert_eq!(settings.port, DEFAULT_PORT);
        assert_eq!(settings.resources, GatewayResources::default());
        assert_eq!(settings.opt_out_annotation, DEFAULT_OPT_OUT_ANNOTATION);
        let missing = InjectSettings::resolve(InjectFile::default(), InjectFile::default());
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .starts_with("image: is required")
        );
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let found = errors(
            "image: registry.example/gw:latest\nport: 70000\nresources:\n  requests: {cpu: [1], memory: lots}\n  limits: {cpu: 100m}\nimagePullSecrets: [Reg_Cred]\ndecisionAnnotation: \"a b\"\nextra: 1\n",
        );
        let expected = [
            "extra: unknown field;",
            "image: must name the image by digest",
            "port: must be at most 65535",
            "resources.requests.cpu: must be a string",
            "resources.requests.memory: \"lots\" is not a Kubernetes quantity",
            "resources.limits.memory: is required",
            "imagePullSecrets[0]: \"Reg_Cred\" is not a Kubernetes object name",
            "decisionAnnotation: \"a b\" is not an annotation key",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for start in expected {
            assert!(
                found.iter().any(|e| e.starts_with(start)),
                "{start}: {found:#?}"
            );
        }
    }

    #[test]
    fn resource_flags_set_single_quantities_and_are_checked_with_the_file() {
        let file = parse_inject_file(&format!(
            "image: {DIGEST}\nresources:\n  requests: {{cpu: 10m, memory: 40Mi}}\n  limits: {{cpu: 200m, memory: 80Mi}}\n"
        ))
        .unwrap();
        let q = |text: &str| Some(Quantity::parse(text).unwrap());
        let flags = InjectFile {
            resource_flags: ResourceFlags {
                limits_memory: q("128Mi"),
                ..ResourceFlags::default()
            },
            ..InjectFile::default()
        };
        let settings = InjectSettings::resolve(file.clone(), flags).unwrap();
        assert_eq!(settings.resources.limits.memory.as_str(), "128Mi");
        assert_eq!(settings.resources.requests.memory.as_str(), "40Mi");
        let flags = InjectFile {
            resource_flags: ResourceFlags {
                requests_cpu: q("1"),
                ..ResourceFlags::default()
            },
            ..InjectFile::default()
        };
        let error = InjectSettings::resolve(file, flags)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("resources.requests.cpu: must not exceed limits.cpu (1 > 200m"),
            "{error}"
        );
    }

    #[test]
    fn a_request_above_its_limit_is_refused() {
        let found = errors(
            "resources:\n  requests: {cpu: 200m, memory: 32Mi}\n  limits: {cpu: 0.1, memory: 64Mi}\n",
        );
        assert_eq!(
            found,
            [
                "resources.requests.cpu: must not exceed limits.cpu (200m > 0.1): the pod would be invalid"
            ]
        );
    }

    #[test]
    fn the_default_resources_are_the_quantities_they_say() {
        let defaults = GatewayResources::default();
        for quantity in [
            &defaults.requests.cpu,
            &defaults.requests.memory,
            &defaults.limits.cpu,
            &defaults.limits.memory,
        ] {
            assert_eq!(
                Some(quantity),
                Quantity::parse(quantity.as_str()).ok().as_ref()
            );
        }
    }

    #[test]
    fn only_an_image_by_digest_is_accepted() {
        assert!(ImageByDigest::parse(DIGEST).is_ok());
        for text in [
            "gw:1.0",
            "gw@sha256:abc",
            "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "gw@sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageByDigest::parse(text).is_err(), "{text}");
        }
    }
}
