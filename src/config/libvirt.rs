//! The libvirt backend's settings: which domain (`agent: libvirt:DOMAIN`) and which daemon
//! (`libvirtUri`). Parsed here whatever the binary is built with, so a config is judged the
//! same by both binaries; only `virt-probe-gateway-libvirt` can connect (feature `libvirt`).
//!
//! Only local URIs are accepted (docs/libvirt.md, "The connection"): a remote transport
//! (`+ssh`, `+tcp`, `+tls`, `+ext`) or a host would take the gateway off the node, and a
//! session URI without `socket=` lets libvirt start a daemon of its own when none answers,
//! which in a pod would be a second libvirt owning nothing. With an explicit socket libvirt
//! never spawns a daemon; `LIBVIRT_AUTOSTART=0` (set by the image) says so once more.

use std::fmt;
use std::path::{Path, PathBuf};

/// The accepted forms, quoted in every error about a libvirt URI.
pub(crate) const ACCEPTED_URIS: &str = "qemu+unix:///session?socket=/absolute/path, \
     qemu+unix:///system?socket=/absolute/path, or qemu:///system";

/// KubeVirt's non-root virt-launcher: its daemon's socket on the pod's `libvirt-runtime`
/// volume, mounted at `/var/run/libvirt`.
pub(crate) const DEFAULT_LIBVIRT_URI: &str =
    "qemu+unix:///session?socket=/var/run/libvirt/virtqemud-sock";

/// The longest unix socket path the kernel takes (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What a binary built without the libvirt backend says about `agent: libvirt:...`.
pub(crate) const LIBVIRT_NOT_BUILT_IN: &str = "the libvirt backend is not in this binary (it links libvirt0, which the other modes \
     do not pay for): run virt-probe-gateway-libvirt, from the same image";

/// A validated libvirt connection URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtUri {
    text: String,
    /// The daemon's socket, when the URI names one (`qemu:///system` uses libvirt's own).
    socket: Option<PathBuf>,
}

impl LibvirtUri {
    /// Parses one of [`ACCEPTED_URIS`].
    pub fn parse(text: &str) -> Result<LibvirtUri, String> {
        let text = text.trim();
        let refuse = |why: &str| Err(format!("{text:?} {why}; expected {ACCEPTED_URIS}"));
        if text == "qemu:///system" {
            return Ok(LibvirtUri {
                text: text.to_string(),
                socket: None,
            });
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return refuse("is not a libvirt URI");
        };
        match scheme {
            "qemu+unix" => {}
            "qemu" => return refuse("is not accepted: qemu:// is allowed only as qemu:///system"),
            _ if scheme.starts_with("qemu+") => {
                return refuse("uses a remote transport: only the local unix socket is accepted");
            }
            _ => return refuse("is not a QEMU driver URI"),
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return refuse("names a host: only a daemon on this node is accepted");
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path != "session" && path != "system" {
            return refuse("must end in /session or /system");
        }
        let Some(socket) = query.strip_prefix("socket=") else {
            return refuse(if query.is_empty() {
                "has no socket=: libvirt could start a daemon of its own"
            } else {
                "takes one parameter, socket="
            });
        };
        if socket.contains(['&', '#', '%']) {
            return refuse("takes one parameter, socket=, a plain path (no &, # or %)");
        }
        if !socket.starts_with('/') {
            return refuse("has a socket= that is not an absolute path");
        }
        if socket.len() > MAX_SOCKET_PATH {
            return refuse(
                "has a socket path longer than 107 bytes, which a unix socket cannot have",
            );
        }
        Ok(LibvirtUri {
            text: text.to_string(),
            socket: Some(PathBuf::from(socket)),
        })
    }

    #[cfg_attr(
        not(feature = "libvirt"),
        allow(dead_code, reason = "used by the libvirt backend")
    )]
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The daemon's socket, checked before connecting so that a missing one is said plainly.
    #[cfg_attr(
        not(feature = "libvirt"),
        allow(dead_code, reason = "used by the libvirt backend")
    )]
    pub(crate) fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }
}

impl Default for LibvirtUri {
    fn default() -> LibvirtUri {
        LibvirtUri {
            text: DEFAULT_LIBVIRT_URI.to_string(),
            socket: Some(PathBuf::from("/var/run/libvirt/virtqemud-sock")),
        }
    }
}

impl fmt::Display for LibvirtUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The longest domain name accepted: KubeVirt's `<namespace>_<name>` is at most 63 + 1 +
/// 253 bytes; libvirt itself has no smaller limit.
const MAX_DOMAIN: usize = 320;

/// `DOMAIN` of `libvirt:DOMAIN`: a name or a UUID, or, written `libvirt:` alone with a
/// VM or VMI manifest as the config, the domain KubeVirt gives that VMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibvirtDomain {
    /// A domain name or UUID, as libvirt looks it up.
    Named(String),
    /// `<namespace>_<name>` of the manifest given as config.
    OfManifest,
}

impl LibvirtDomain {
    pub(crate) fn parse(text: &str, domain: &str) -> Result<LibvirtDomain, String> {
        if domain.is_empty() {
            return Ok(LibvirtDomain::OfManifest);
        }
        if domain.len() > MAX_DOMAIN {
            return Err(format!(
                "{text:?}: the domain name is longer than {MAX_DOMAIN} bytes"
            ));
        }
        if domain.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "{text:?}: a domain name has no spaces or control characters"
            ));
        }
        Ok(LibvirtDomain::Named(domain.to_string()))
    }

    /// KubeVirt's name for the domain of the VMI `name` in `namespace`.
    pub(crate) fn of_vmi(namespace: &str, name: &str) -> String {
        format!("{namespace}_{name}")
    }
}

impl fmt::Display for LibvirtDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LibvirtDomain::Named(name) => f.write_str(name),
            LibvirtDomain::OfManifest => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_local_forms_are_accepted() {
        let session = LibvirtUri::parse("qemu+unix:///session?socket=/run/l/sock").unwrap();
        assert_eq!(session.socket(), Some(Path::new("/run/l/sock")));
        let system = LibvirtUri::parse("qemu+unix:///system?socket=/run/l/sock").unwrap();
        assert_eq!(system.as_str(), "qemu+unix:///system?socket=/run/l/sock");
        assert_eq!(LibvirtUri::parse("qemu:///system").unwrap().socket(), None);
        assert_eq!(
            LibvirtUri::parse(DEFAULT_LIBVIRT_URI).unwrap(),
            LibvirtUri::default()
        );
    }

    #[test]
    fn remote_hosted_and_daemon_starting_uris_are_refused_with_the_accepted_forms() {
        for (uri, why) in [
            ("qemu+ssh://host/system", "remote transport"),
            ("qemu+tcp:///system", "remote transport"),
            ("qemu+tls://host/system", "remote transport"),
            ("qemu+ext:///system?command=/bin/x", "remote transport"),
            ("qemu+unix://host/session?socket=/s", "names a host"),
            ("qemu:///session", "only as qemu:///system"),
            ("qemu://host/system", "only as qemu:///system"),
            ("qemu+unix:///session", "has no socket="),
            (
                "qemu+unix:///session?socket=relative",
                "not an absolute path",
            ),
            (
                "qemu+unix:///session?socket=/s&mode=legacy",
                "one parameter",
            ),
            ("qemu+unix:///session?no_verify=1", "one parameter"),
            ("qemu+unix:///other?socket=/s", "/session or /system"),
            ("xen:///system", "not a QEMU driver URI"),
            ("/run/libvirt/sock", "not a libvirt URI"),
        ] {
            let error = LibvirtUri::parse(uri).unwrap_err();
            assert!(error.contains(why), "{uri}: {error}");
            assert!(error.contains(ACCEPTED_URIS), "{uri}: {error}");
        }
        let long = format!("qemu+unix:///session?socket=/{}", "s".repeat(107));
        assert!(LibvirtUri::parse(&long).unwrap_err().contains("107 bytes"));
    }

    #[test]
    fn a_domain_is_a_name_or_uuid_or_the_manifests() {
        assert_eq!(
            LibvirtDomain::parse("libvirt:ns_vm", "ns_vm"),
            Ok(LibvirtDomain::Named("ns_vm".into()))
        );
        assert_eq!(
            LibvirtDomain::parse("libvirt:", ""),
            Ok(LibvirtDomain::OfManifest)
        );
        assert!(LibvirtDomain::parse("libvirt:a b", "a b").is_err());
        assert_eq!(LibvirtDomain::of_vmi("default", "vm1"), "default_vm1");
    }
}
