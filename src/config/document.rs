//! The gateway document: what a config file holds, read from its syntax tree.
//!
//! This module owns the entry point [`parse_document`], the dispatch on what a document is
//! (a gateway config, or a manifest read by [`super::manifest`]), the gateway's own fields
//! (`listen`, `agent`) and the checks fields it shares with the manifest annotation
//! ([`CheckFields`]). Probes are read by [`super::probe_fields`].

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::checks::{Definitions, definitions_value};
use super::manifest::{self, DocumentKind};
use super::probe_fields::read_probe_field;
use super::syntax::read_syntax;
use super::walk::{
    Errors, FieldPath, at_least, describe, document_mapping, in_range, integer, read_bool,
    read_field, set_value, string, unknown_field_message, unknown_fields,
};
use super::{AgentSetting, LibvirtUri};
use super::{
    ChecksOrigin, ConfigErrors, GatewayFile, MAX_OUTPUT_EXCERPT_BYTES, Mode, ProbeKind, ProbeSpec,
};

/// What a whole config document may be, named in the error about a document of the wrong
/// shape.
const DOCUMENT_EXPECTED: &str = "a gateway config with readinessProbe and/or livenessProbe, \
     or a KubeVirt VirtualMachine or VirtualMachineInstance manifest";

/// The fields only a gateway config has: where the gateway listens and reaches the agent.
/// A gateway config's fields are these and then [`CHECKS_FIELDS`], in that order.
pub(super) const GATEWAY_OWN_FIELDS: &[&str] = &["listen", "agent", "libvirtUri"];

/// The fields a gateway config shares with the manifest annotation: the checks and how they
/// are reported, but not where the gateway listens or reaches the agent.
pub(super) const CHECKS_FIELDS: &[&str] = &[
    "mode",
    "minIntervalSeconds",
    "livenessGraceSeconds",
    "exposeOutput",
    "outputExcerptBytes",
    "checks",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
];

/// Parses and validates a config document: a gateway config, or a KubeVirt VirtualMachine or
/// VirtualMachineInstance manifest, in YAML or JSON. Returns every problem found, each with
/// its field path.
pub(crate) fn parse_document(text: &str) -> Result<GatewayFile, ConfigErrors> {
    let mut errors = Errors::default();
    let root = FieldPath::root();
    let file = match read_syntax(text) {
        Ok(value) => document_mapping(&value, &root, DOCUMENT_EXPECTED, &mut errors)
            .and_then(|map| read_document(map, &mut errors)),
        Err(error) => {
            errors.add(&root, error.to_string());
            None
        }
    };
    errors.finish(file)
}

/// Dispatches on what the document is: the manifest kinds are recognised by `kind`.
fn read_document(map: &Map<String, Value>, errors: &mut Errors) -> Option<GatewayFile> {
    match manifest::document_kind(map, errors) {
        DocumentKind::GatewayConfig => Some(read_gateway_config(map, errors)),
        DocumentKind::Manifest(kind) => manifest::read_manifest(kind, map, errors),
        DocumentKind::Unsupported => None,
    }
}

/// Reads a gateway config document: its own settings plus the checks.
fn read_gateway_config(map: &Map<String, Value>, errors: &mut Errors) -> GatewayFile {
    let root = FieldPath::root();
    let known: Vec<&str> = GATEWAY_OWN_FIELDS
        .iter()
        .chain(CHECKS_FIELDS)
        .copied()
        .collect();
    for key in unknown_fields(map, &known) {
        errors.add(&root.field(key), unknown_field_message(key, &known));
    }
    let listen = read_field(map, &root, "listen", errors, read_listen);
    let agent = read_field(map, &root, "agent", errors, read_agent);
    let libvirt_uri = read_field(map, &root, "libvirtUri", errors, read_libvirt_uri);
    GatewayFile {
        libvirt_uri,
        ..read_checks(map, &root, errors).into_file(ChecksOrigin::GatewayConfig, listen, agent)
    }
}

/// The check fields as a document gives them (a gateway config, the manifest annotation or a
/// manifest's own probes): the checks and their reporting settings, not yet resolved. Unset
/// fields stay `None` so that defaults are applied in one place ([`super::Settings`]).
#[derive(Debug, Default)]
pub(super) struct CheckFields {
    pub(super) mode: Option<Mode>,
    pub(super) min_interval: Option<Duration>,
    pub(super) liveness_grace: Option<Duration>,
    pub(super) expose_output: Option<bool>,
    pub(super) output_excerpt_bytes: Option<usize>,
    pub(super) readiness: Option<ProbeSpec>,
    pub(super) liveness: Option<ProbeSpec>,
    pub(super) startup: Option<ProbeSpec>,
}

impl CheckFields {
    pub(super) fn into_file(
        self,
        origin: ChecksOrigin,
        listen: Option<SocketAddr>,
        agent: Option<AgentSetting>,
    ) -> GatewayFile {
        GatewayFile {
            origin,
            listen,
            agent,
            libvirt_uri: None,
            vmi_domain: None,
            mode: self.mode,
            min_interval: self.min_interval,
            liveness_grace: self.liveness_grace,
            expose_output: self.expose_output,
            output_excerpt_bytes: self.output_excerpt_bytes,
            readiness: self.readiness,
            liveness: self.liveness,
            startup: self.startup,
        }
    }
}

/// Reads [`CHECKS_FIELDS`] from `map` (the caller reports unknown fields, which differ
/// between a gateway config and the annotation). At least one of readinessProbe and
/// livenessProbe must be written; an invalid one has its own errors, so "no probe
/// configured" is only said when none is.
pub(super) fn read_checks(
    map: &Map<String, Value>,
    path: &FieldPath,
    errors: &mut Errors,
) -> CheckFields {
    if ProbeKind::KUBELET
        .iter()
        .all(|kind| set_value(map, kind.field()).is_none())
    {
        let message = "no probe configured: set readinessProbe and/or livenessProbe";
        if set_value(map, ProbeKind::Startup.field()).is_some() {
            errors.add(
                path,
                format!("{message} (a startupProbe only holds them back until it passes)"),
            );
        } else {
            errors.add(path, message);
        }
    }
    let mode = read_field(map, path, "mode", errors, read_mode);
    let min_interval = read_field(map, path, "minIntervalSeconds", errors, read_grace);
    if mode == Some(Mode::Background) && min_interval.is_some_and(|d| !d.is_zero()) {
        errors.add(
            &path.field("minIntervalSeconds"),
            "applies to mode: onDemand only; in background mode every answer is the loop's \
             latest result",
        );
    }
    let mut definitions = Definitions::read(definitions_value(map), path.field("checks"), errors);
    let mut probe = |kind| read_probe_field(map, path, kind, Some(&mut definitions), errors);
    let readiness = probe(ProbeKind::Readiness);
    let liveness = probe(ProbeKind::Liveness);
    let startup = probe(ProbeKind::Startup);
    definitions.report_unused(errors);
    CheckFields {
        mode,
        min_interval,
        liveness_grace: read_field(map, path, "livenessGraceSeconds", errors, read_grace),
        expose_output: read_field(map, path, "exposeOutput", errors, read_bool),
        output_excerpt_bytes: read_field(map, path, "outputExcerptBytes", errors, read_excerpt),
        readiness,
        liveness,
        startup,
    }
}

fn read_listen(value: &Value) -> Result<SocketAddr, String> {
    let expected = "an IP address and port such as [::]:8080 or 0.0.0.0:8080";
    let text = match value {
        Value::String(text) => text,
        other => return Err(format!("must be {expected} (found {})", describe(other))),
    };
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a socket address; expected {expected}"))
}

fn read_agent(value: &Value) -> Result<AgentSetting, String> {
    AgentSetting::parse(string(value)?)
}

fn read_libvirt_uri(value: &Value) -> Result<LibvirtUri, String> {
    LibvirtUri::parse(string(value)?)
}

/// `livenessGraceSeconds`: 0 turns the grace off.
fn read_grace(value: &Value) -> Result<Duration, String> {
    let seconds = integer(value).and_then(|n| in_range(n, 0, i64::MAX))?;
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| at_least(0))
}

fn read_mode(value: &Value) -> Result<Mode, String> {
    match value.as_str() {
        Some("onDemand") => Ok(Mode::OnDemand),
        Some("background") => Ok(Mode::Background),
        _ => Err(format!(
            "must be onDemand or background (found {})",
            match value {
                Value::String(text) => format!("{text:?}"),
                other => describe(other).to_string(),
            }
        )),
    }
}

fn read_excerpt(value: &Value) -> Result<usize, String> {
    let max = i64::try_from(MAX_OUTPUT_EXCERPT_BYTES).unwrap_or(i64::MAX);
    let bytes = integer(value).and_then(|n| in_range(n, 0, max))?;
    usize::try_from(bytes).map_err(|_| at_least(0))
}
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::agent::AgentAddress;
    use crate::config::test_support::{
        errors_of, liveness_ping, probe, probe_of, single_error, single_error_starting_with,
    };
    use crate::config::{ExecCommand, Handler, ProbeKind};

    const SEED: &str = r#"
listen: "[::]:8080"
agent: "unix:///run/probe-gateway/agent.sock"
livenessGraceSeconds: 600
exposeOutput: false
outputExcerptBytes: 1024
readinessProbe:
  exec:
    command: ["cat", "/tmp/healthy.txt"]
  timeoutSeconds: 5
livenessProbe:
  guestAgentPing: {}
  timeoutSeconds: 1
"#;

    #[test]
    fn the_seed_example_parses_to_the_expected_gateway_file() {
        let expected = GatewayFile {
            origin: ChecksOrigin::GatewayConfig,
            listen: Some(SocketAddr::from(([0u16; 8], 8080))),
            agent: Some(AgentSetting::Address(AgentAddress::Unix(PathBuf::from(
                "/run/probe-gateway/agent.sock",
            )))),
            libvirt_uri: None,
            vmi_domain: None,
            mode: None,
            min_interval: None,
            liveness_grace: Some(Duration::from_secs(600)),
            expose_output: Some(false),
            output_excerpt_bytes: Some(1024),
            readiness: Some(probe(
                Handler::Exec(ExecCommand {
                    path: "cat".into(),
                    args: vec!["/tmp/healthy.txt".into()],
                }),
                5,
            )),
            liveness: Some(probe_of(ProbeKind::Liveness, Handler::GuestAgentPing, 1)),
            startup: None,
        };
        assert_eq!(parse_document(SEED), Ok(expected));
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let example = include_str!("../../examples/gateway.yaml");
        assert_eq!(parse_document(example), parse_document(SEED));
    }

    #[test]
    fn json_is_accepted_with_the_same_meaning_as_yaml() {
        let json = r#"{
            "listen": "[::]:8080",
            "agent": "unix:///run/probe-gateway/agent.sock",
            "livenessGraceSeconds": 600,
            "exposeOutput": false,
            "outputExcerptBytes": 1024,
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/healthy.txt"]}, "timeoutSeconds": 5},
            "livenessProbe": {"guestAgentPing": {}, "timeoutSeconds": 1}
        }"#;
        assert_eq!(parse_document(json), parse_document(SEED));
    }

    #[test]
    fn unset_fields_stay_unset_and_probe_fields_take_kubernetes_defaults() {
        let file = parse_document("readinessProbe:\n  guestAgentPing: {}\n").unwrap();
        assert_eq!(file.listen, None);
        assert_eq!(file.agent, None);
        assert_eq!(file.liveness_grace, None);
        assert_eq!(file.expose_output, None);
        assert_eq!(file.output_excerpt_bytes, None);
        assert_eq!(file.liveness, None);
        assert_eq!(file.readiness, Some(probe(Handler::GuestAgentPing, 1)));
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_field_path() {
        let errors = errors_of(
            "listen: nowhere\nreadinessProbe:\n  exec:\n    command: [cat, 5]\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 0\n",
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("listen: \"nowhere\" is not a socket address"));
        assert!(errors[1].starts_with("readinessProbe.exec.command[1]: must be a string"));
        assert_eq!(
            errors[2],
            "livenessProbe.timeoutSeconds: must be at least 1"
        );
    }

    #[test]
    fn an_unknown_top_level_field_is_an_error_listing_the_expected_fields() {
        let error = single_error(&liveness_ping("bogus: 1\n"));
        assert_eq!(
            error,
            "bogus: unknown field; expected one of listen, agent, libvirtUri, mode, minIntervalSeconds, \
             livenessGraceSeconds, exposeOutput, outputExcerptBytes, checks, readinessProbe, \
             livenessProbe, startupProbe"
        );
    }

    #[test]
    fn a_config_without_probes_is_rejected() {
        let error = single_error("agent: /run/qga.sock\n");
        assert_eq!(
            error,
            "no probe configured: set readinessProbe and/or livenessProbe"
        );
    }

    #[test]
    fn an_invalid_probe_is_not_also_reported_as_missing() {
        let error = single_error("readinessProbe: 5\n");
        assert_eq!(
            error,
            "readinessProbe: must be a mapping (found an integer)"
        );
    }

    #[test]
    fn a_listen_address_must_name_ip_and_port() {
        let error = single_error(&liveness_ping("listen: 8080\n"));
        assert_eq!(
            error,
            "listen: must be an IP address and port such as [::]:8080 or 0.0.0.0:8080 (found an integer)"
        );
        let file = parse_document(&liveness_ping("listen: 0.0.0.0:9000\n")).unwrap();
        assert_eq!(file.listen, Some(SocketAddr::from(([0, 0, 0, 0], 9000))));
    }

    #[test]
    fn an_agent_address_error_is_the_agent_parsers_own() {
        let error = single_error(&liveness_ping("agent: relative.sock\n"));
        let expected = AgentAddress::parse("relative.sock").unwrap_err();
        assert_eq!(error, format!("agent: {expected}"));
    }

    #[test]
    fn a_liveness_grace_of_0_turns_the_grace_off_and_negative_is_rejected() {
        let file = parse_document(&liveness_ping("livenessGraceSeconds: 0\n")).unwrap();
        assert_eq!(file.liveness_grace, Some(Duration::ZERO));
        let error = single_error(&liveness_ping("livenessGraceSeconds: -1\n"));
        assert_eq!(error, "livenessGraceSeconds: must be at least 0");
    }

    #[test]
    fn mode_is_on_demand_or_background() {
        let file = parse_document(&liveness_ping("mode: background\n")).unwrap();
        assert_eq!(file.mode, Some(Mode::Background));
        let file = parse_document(&liveness_ping("mode: onDemand\n")).unwrap();
        assert_eq!(file.mode, Some(Mode::OnDemand));
        let error = single_error(&liveness_ping("mode: Background\n"));
        assert_eq!(
            error,
            "mode: must be onDemand or background (found \"Background\")"
        );
    }

    #[test]
    fn min_interval_is_for_on_demand_mode_only() {
        let file = parse_document(&liveness_ping("minIntervalSeconds: 5\n")).unwrap();
        assert_eq!(file.min_interval, Some(Duration::from_secs(5)));
        single_error_starting_with(
            &liveness_ping("mode: background\nminIntervalSeconds: 5\n"),
            "minIntervalSeconds: applies to mode: onDemand only",
        );
    }

    #[test]
    fn the_output_excerpt_size_is_bounded() {
        let max = format!("outputExcerptBytes: {MAX_OUTPUT_EXCERPT_BYTES}\n");
        let file = parse_document(&liveness_ping(&max)).unwrap();
        assert_eq!(file.output_excerpt_bytes, Some(MAX_OUTPUT_EXCERPT_BYTES));
        let above = format!("outputExcerptBytes: {}\n", MAX_OUTPUT_EXCERPT_BYTES + 1);
        let error = single_error(&liveness_ping(&above));
        assert_eq!(
            error,
            format!("outputExcerptBytes: must be at most {MAX_OUTPUT_EXCERPT_BYTES}")
        );
    }
}
