//! The `agent` setting as configured: where the agent is, or, for a KubeVirt hook sidecar,
//! the VM's own vsock, whose CID only the VMI at `OnDefineDomain` brings. The agent client
//! knows only [`AgentAddress`]es; the VM's vsock is resolved here and in
//! `crate::kubevirt::vm`, and refused outside hook mode by [`super::Settings`] resolution.
//! `libvirt:DOMAIN` is not a stream at all: the libvirt backend reaches that domain's agent
//! through the daemon of `libvirtUri` ([`super::libvirt`]).

use std::fmt;
use std::io;

use super::libvirt::LibvirtDomain;
use crate::agent::transport::{Connect, ConnectFuture};
use crate::agent::{AgentAddress, parse_port};

/// Why `vsock://vmi:PORT` cannot be used outside KubeVirt hook mode.
pub(crate) const VSOCK_OF_VMI_NEEDS_HOOK: &str = "agent: vsock://vmi:PORT takes the CID from the VMI at OnDefineDomain: it needs \
     --kubevirt-hook; give vsock://CID:PORT otherwise";

/// The prefix of the VM's own vsock.
const VSOCK_OF_VMI: &str = "vsock://vmi:";

/// The prefix of a libvirt domain.
const LIBVIRT: &str = "libvirt:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSetting {
    /// An address the gateway can connect to as it is.
    Address(AgentAddress),
    /// `vsock://vmi:PORT`, KubeVirt hook mode only: AF_VSOCK to the VM this sidecar hooks,
    /// whose CID (`status.vsockCID`) is learnt at `OnDefineDomain`.
    VsockOfVmi { port: u32 },
    /// `libvirt:DOMAIN`: the agent of a libvirt domain, through libvirt's agent command.
    Libvirt(LibvirtDomain),
}

impl AgentSetting {
    /// Parses one of [`crate::agent::ACCEPTED_FORMS`].
    pub fn parse(text: &str) -> Result<AgentSetting, String> {
        let text = text.trim();
        if let Some(port) = text.strip_prefix(VSOCK_OF_VMI) {
            return Ok(AgentSetting::VsockOfVmi {
                port: parse_port(text, port)?,
            });
        }
        if let Some(domain) = text.strip_prefix(LIBVIRT) {
            return LibvirtDomain::parse(text, domain).map(AgentSetting::Libvirt);
        }
        AgentAddress::parse(text).map(AgentSetting::Address)
    }

    /// The setting with the VM's vsock CID filled in; an address stays as it is.
    pub fn with_vmi_cid(self, cid: u32) -> AgentSetting {
        match self {
            AgentSetting::VsockOfVmi { port } => {
                AgentSetting::Address(AgentAddress::Vsock { cid, port })
            }
            address => address,
        }
    }
}

impl From<AgentAddress> for AgentSetting {
    fn from(address: AgentAddress) -> AgentSetting {
        AgentSetting::Address(address)
    }
}

impl fmt::Display for AgentSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentSetting::Address(address) => address.fmt(f),
            AgentSetting::VsockOfVmi { port } => write!(f, "{VSOCK_OF_VMI}{port}"),
            AgentSetting::Libvirt(domain) => write!(f, "{LIBVIRT}{domain}"),
        }
    }
}

/// Until the VM is defined, its vsock cannot be reached: probes say why.
impl Connect for AgentSetting {
    fn connect(&self) -> ConnectFuture {
        match self {
            AgentSetting::Address(address) => address.connect(),
            AgentSetting::VsockOfVmi { .. } => Box::pin(async {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the VM's vsock CID is not known yet: it comes with the VMI at \
                     KubeVirt's OnDefineDomain hook",
                ))
            }),
            // Never asked: a libvirt domain gets the libvirt backend, not a stream.
            AgentSetting::Libvirt(_) => Box::pin(async {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a libvirt domain is reached through libvirt, not a stream",
                ))
            }),
        }
    }

    fn describe(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vms_own_vsock_parses_displays_and_takes_its_cid() {
        let setting = AgentSetting::parse("vsock://vmi:1024").unwrap();
        assert_eq!(setting, AgentSetting::VsockOfVmi { port: 1024 });
        assert_eq!(setting.to_string(), "vsock://vmi:1024");
        assert_eq!(
            setting.with_vmi_cid(7),
            AgentSetting::Address(AgentAddress::Vsock { cid: 7, port: 1024 })
        );
    }

    #[test]
    fn a_libvirt_domain_parses_and_displays() {
        let setting = AgentSetting::parse(" libvirt:default_vm1 ").unwrap();
        assert_eq!(
            setting,
            AgentSetting::Libvirt(LibvirtDomain::Named("default_vm1".into()))
        );
        assert_eq!(setting.to_string(), "libvirt:default_vm1");
        assert_eq!(
            AgentSetting::parse("libvirt:"),
            Ok(AgentSetting::Libvirt(LibvirtDomain::OfManifest))
        );
    }

    #[test]
    fn other_forms_are_addresses_with_the_address_parsers_errors() {
        assert_eq!(
            AgentSetting::parse("/run/qga.sock"),
            Ok(AgentSetting::Address(AgentAddress::Unix(
                "/run/qga.sock".into()
            )))
        );
        assert_eq!(
            AgentSetting::parse("relative.sock"),
            AgentAddress::parse("relative.sock").map(AgentSetting::Address)
        );
        let error = AgentSetting::parse("vsock://vmi:x").unwrap_err();
        assert!(error.contains("port \"x\""), "{error}");
    }
}
