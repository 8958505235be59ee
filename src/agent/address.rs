//! Where the guest agent is reached: parsed once from the `agent` setting.

use std::fmt;
use std::path::PathBuf;

/// The accepted forms, quoted in every error about an agent address.
pub const ACCEPTED_FORMS: &str = "unix:///absolute/path or an absolute path";

/// The address of a qemu-guest-agent endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    /// A unix stream socket: a chardev socket of the agent's virtio-serial port, or a
    /// `qemu-ga -m unix-listen` socket.
    Unix(PathBuf),
}

impl AgentAddress {
    /// Parses `unix:///path` or a bare absolute path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("must not be empty; expected {ACCEPTED_FORMS}"));
        }
        let path = if let Some(rest) = text.strip_prefix("unix://") {
            rest
        } else if text.contains("://") {
            let scheme = text.split("://").next().unwrap_or_default();
            return Err(format!(
                "unsupported scheme `{scheme}` in {text:?}; expected {ACCEPTED_FORMS}"
            ));
        } else {
            text
        };
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?} is not an absolute socket path; expected {ACCEPTED_FORMS}"
            ));
        }
        if path.contains('\0') {
            return Err(format!("{text:?} contains a NUL byte"));
        }
        Ok(AgentAddress::Unix(PathBuf::from(path)))
    }
}

impl fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAddress::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unix_uri_and_bare_absolute_path() {
        let expected = AgentAddress::Unix(PathBuf::from("/run/qga.sock"));
        assert_eq!(
            AgentAddress::parse("unix:///run/qga.sock"),
            Ok(expected.clone())
        );
        assert_eq!(AgentAddress::parse("/run/qga.sock"), Ok(expected));
    }

    #[test]
    fn rejects_relative_paths_and_unknown_schemes_naming_the_accepted_forms() {
        for bad in ["qga.sock", "unix://run/qga.sock", "tcp://1.2.3.4:5", ""] {
            let error = AgentAddress::parse(bad).unwrap_err();
            assert!(error.contains(ACCEPTED_FORMS), "{bad}: {error}");
        }
    }
}
