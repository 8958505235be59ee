//! Where the guest agent is reached: parsed once from the `agent` setting.

use std::fmt;
use std::path::PathBuf;

/// The accepted forms, quoted in every error about an agent address.
pub(crate) const ACCEPTED_FORMS: &str = "unix:///absolute/path, an absolute path, vsock://CID:PORT (vsock://vmi:PORT in hook mode), hybrid-vsock:///absolute/path?port=PORT, or libvirt:DOMAIN";

/// The address of a qemu-guest-agent endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddress {
    /// A unix stream socket: a chardev socket of the agent's virtio-serial port, or a
    /// `qemu-ga -m unix-listen` socket.
    Unix(PathBuf),
    /// AF_VSOCK to a guest whose qemu-ga runs `-m vsock-listen` on `port`. In KubeVirt the
    /// CID is the VMI's `status.vsockCID`; the pod needs a seccomp profile allowing AF_VSOCK.
    Vsock { cid: u32, port: u32 },
    /// Firecracker / Cloud Hypervisor host-side vsock: a unix socket that connects to the
    /// guest's `port` after a `CONNECT <port>` / `OK <n>` handshake.
    HybridVsock { path: PathBuf, port: u32 },
    /// The private virtio-serial channel a KubeVirt hook sidecar adds to its VM
    /// (`serve --kubevirt-hook`): a unix socket QEMU binds in the sidecar's hooks directory
    /// when the VM starts. KubeVirt 1.6 and later give each sidecar its own sub-directory
    /// of the hooks volume, older releases share the volume: seen from the sidecar, the
    /// same socket is then at `socket` or at `shared_layout`, and whichever exists is used.
    /// Never parsed from text: only hook mode sets it.
    PrivateChannel {
        socket: PathBuf,
        shared_layout: PathBuf,
    },
}

impl AgentAddress {
    /// Parses one of [`ACCEPTED_FORMS`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("must not be empty; expected {ACCEPTED_FORMS}"));
        }
        if text.contains('\0') {
            return Err(format!("{text:?} contains a NUL byte"));
        }
        if let Some(rest) = text.strip_prefix("unix://") {
            return Ok(AgentAddress::Unix(absolute_path(text, rest)?));
        }
        if let Some(rest) = text.strip_prefix("vsock://") {
            return parse_vsock(text, rest);
        }
        if let Some(rest) = text.strip_prefix("hybrid-vsock://") {
            return parse_hybrid(text, rest);
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "unsupported scheme `{scheme}` in {text:?}; expected {ACCEPTED_FORMS}"
            ));
        }
        Ok(AgentAddress::Unix(absolute_path(text, text)?))
    }
}

fn absolute_path(text: &str, path: &str) -> Result<PathBuf, String> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(format!(
            "{text:?} is not an absolute socket path; expected {ACCEPTED_FORMS}"
        ))
    }
}

/// Reads `port`, a part of the address `text` (which the error names), as a port number.
pub(crate) fn parse_port(text: &str, port: &str) -> Result<u32, String> {
    port.parse().map_err(|_| {
        format!("{text:?}: port {port:?} is not a number from 0 to 4294967295; expected {ACCEPTED_FORMS}")
    })
}

fn parse_vsock(text: &str, rest: &str) -> Result<AgentAddress, String> {
    let Some((cid, port)) = rest.split_once(':') else {
        return Err(format!("{text:?} has no port; expected vsock://CID:PORT"));
    };
    if cid == "vmi" {
        return Err(format!(
            "{text:?}: vsock://vmi:PORT is the VM's own vsock, known only to a KubeVirt hook \
             sidecar at OnDefineDomain; expected vsock://CID:PORT here"
        ));
    }
    let cid = cid.parse::<u32>().map_err(|_| {
        format!("{text:?}: CID {cid:?} is not a number (the VMI's status.vsockCID); expected vsock://CID:PORT")
    })?;
    Ok(AgentAddress::Vsock {
        cid,
        port: parse_port(text, port)?,
    })
}

fn parse_hybrid(text: &str, rest: &str) -> Result<AgentAddress, String> {
    let Some((path, query)) = rest.split_once('?') else {
        return Err(format!(
            "{text:?} has no port; expected hybrid-vsock:///absolute/path?port=PORT"
        ));
    };
    let Some(port) = query.strip_prefix("port=") else {
        return Err(format!(
            "{text:?}: the query must be port=PORT; expected hybrid-vsock:///absolute/path?port=PORT"
        ));
    };
    Ok(AgentAddress::HybridVsock {
        path: absolute_path(text, path)?,
        port: parse_port(text, port)?,
    })
}

impl fmt::Display for AgentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            AgentAddress::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            AgentAddress::HybridVsock { path, port } => {
                write!(f, "hybrid-vsock://{}?port={port}", path.display())
            }
            AgentAddress::PrivateChannel {
                socket,
                shared_layout,
            } => write!(
                f,
                "unix://{} (or unix://{})",
                socket.display(),
                shared_layout.display()
            ),
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
    fn accepts_vsock_cid_and_port() {
        assert_eq!(
            AgentAddress::parse("vsock://3:1234"),
            Ok(AgentAddress::Vsock { cid: 3, port: 1234 })
        );
    }

    #[test]
    fn accepts_hybrid_vsock_path_and_port() {
        assert_eq!(
            AgentAddress::parse("hybrid-vsock:///run/fc/v.sock?port=1024"),
            Ok(AgentAddress::HybridVsock {
                path: PathBuf::from("/run/fc/v.sock"),
                port: 1024
            })
        );
    }

    #[test]
    fn addresses_display_as_they_parse() {
        for text in [
            "unix:///a/b",
            "vsock://3:99",
            "hybrid-vsock:///a/v.sock?port=7",
        ] {
            assert_eq!(AgentAddress::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn rejects_malformed_addresses_naming_what_is_wrong() {
        for (bad, says) in [
            ("qga.sock", "absolute"),
            ("unix://run/qga.sock", "absolute"),
            ("tcp://1.2.3.4:5", "unsupported scheme `tcp`"),
            ("", "empty"),
            ("vsock://3", "no port"),
            ("vsock://x:1", "CID \"x\""),
            ("vsock://3:99999999999", "port"),
            ("hybrid-vsock:///v.sock", "no port"),
            ("hybrid-vsock:///v.sock?p=1", "port=PORT"),
            ("hybrid-vsock://v.sock?port=1", "absolute"),
        ] {
            let error = AgentAddress::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
            assert!(error.contains("expected"), "{bad}: {error}");
        }
    }
}
