//! The injector's decision for one VMI, as the annotation that carries it from the VMI to
//! the VMI's launcher pods (KubeVirt copies VMI annotations to the pod it creates).
//!
//! The value is a small JSON object with a version, so that a later release reads what this
//! one wrote and a pod decided by a newer release is left alone by an older one:
//! `{"v":1,"inject":true,"port":8190,"road":"libvirt","reason":"..."}`. The port is the one
//! checked against the VMI's forwarded ports; the pod gets that port even if the
//! injector's setting has changed since. The road is how the gateway reaches the agent
//! ([`Road`]); KubeVirt's `Plugin` resource of the plugin road selects VMIs by it.

use serde::{Deserialize, Serialize};

/// The version this release writes and reads.
const VERSION: u32 = 1;

/// How an injected gateway reaches the guest's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Road {
    /// Through libvirt, to the guest's own agent: nothing changes in the guest.
    #[default]
    Libvirt,
    /// A private channel added by the gateway as a KubeVirt 1.9 plugin: the guest runs a
    /// second agent on it; the `Plugins` gate must be on.
    Plugin,
}

impl Road {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Road::Libvirt => "libvirt",
            Road::Plugin => "plugin",
        }
    }

    /// Reads an annotation's or path's road.
    pub(crate) fn parse(text: &str) -> Option<Road> {
        match text {
            "libvirt" => Some(Road::Libvirt),
            "plugin" => Some(Road::Plugin),
            _ => None,
        }
    }
}

/// What the injector decided for a VMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Decision {
    v: u32,
    /// Whether the VMI's launcher pods get the gateway.
    pub inject: bool,
    /// The gateway's port, checked against the VMI's forwarded ports (when `inject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The road (when `inject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub road: Option<Road>,
    /// Why, in a sentence, shown to the VM's owner as an admission warning too.
    pub reason: String,
}

/// Why an annotation value is not a decision this release can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnreadableDecision {
    #[error("written by another release of the injector (version {0}; this one reads {VERSION})")]
    OtherVersion(u32),
    #[error("not a decision of the injector: {0}")]
    Malformed(String),
}

impl Decision {
    /// Inject, on `port`, by `road`.
    pub(crate) fn inject(port: u16, road: Road, reason: impl Into<String>) -> Decision {
        Decision {
            v: VERSION,
            inject: true,
            port: Some(port),
            road: Some(road),
            reason: reason.into(),
        }
    }

    /// Leave the VMI's probes as KubeVirt renders them.
    pub(crate) fn skip(reason: impl Into<String>) -> Decision {
        Decision {
            v: VERSION,
            inject: false,
            port: None,
            road: None,
            reason: reason.into(),
        }
    }

    /// The annotation's value.
    pub(crate) fn to_annotation(&self) -> String {
        // A struct of a number, a bool, an optional number and a string always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an annotation's value.
    pub(crate) fn from_annotation(text: &str) -> Result<Decision, UnreadableDecision> {
        #[derive(Deserialize)]
        struct Versioned {
            v: u32,
        }
        let versioned: Versioned = serde_json::from_str(text)
            .map_err(|error| UnreadableDecision::Malformed(error.to_string()))?;
        if versioned.v != VERSION {
            return Err(UnreadableDecision::OtherVersion(versioned.v));
        }
        let decision: Decision = serde_json::from_str(text)
            .map_err(|error| UnreadableDecision::Malformed(error.to_string()))?;
        if decision.inject && decision.port.is_none_or(|port| port == 0) {
            return Err(UnreadableDecision::Malformed(
                "inject without a port".to_string(),
            ));
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reads_back_as_written() {
        for decision in [
            Decision::inject(8190, Road::Libvirt, "masquerade with ports [22]"),
            Decision::inject(8190, Road::Plugin, "masquerade with ports [22]"),
            Decision::skip("bridge binding: the guest owns the pod IP"),
        ] {
            let text = decision.to_annotation();
            assert_eq!(Decision::from_annotation(&text), Ok(decision));
        }
        assert_eq!(
            Decision::inject(8190, Road::Plugin, "ok").to_annotation(),
            r#"{"v":1,"inject":true,"port":8190,"road":"plugin","reason":"ok"}"#
        );
    }

    #[test]
    fn another_version_or_a_hand_written_value_is_not_acted_on() {
        assert_eq!(
            Decision::from_annotation(r#"{"v":2,"inject":true,"port":1,"reason":"","new":1}"#),
            Err(UnreadableDecision::OtherVersion(2))
        );
        for text in [
            "eligible",
            r#"{"inject":true}"#,
            r#"{"v":1,"inject":true,"reason":"no port"}"#,
            r#"{"v":1,"inject":"yes","reason":""}"#,
        ] {
            assert!(
                matches!(
                    Decision::from_annotation(text),
                    Err(UnreadableDecision::Malformed(_))
                ),
                "{text}"
            );
        }
    }
}
