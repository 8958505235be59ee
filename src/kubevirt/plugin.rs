//! The gateway as a KubeVirt plugin sidecar (`serve --kubevirt-plugin`, KubeVirt 1.9's
//! `Plugins` gate, VEP 190): virt-launcher calls
//! `kubevirt.hooks.plugins.v1alpha1.DomainHookService/MutateDomain` on a unix socket under
//! `/var/run/kubevirt-plugin/<plugin>/`, with the domain XML, the VMI and why it calls
//! (`Boot`; `MigrationTarget` on a migration's target before the incoming domain is
//! defined). The answer is the domain to define: with the private agent channel added,
//! as hook mode's `OnDefineDomain` does ([`super::hook`]), its socket beside the plugin's
//! on the plugin volume (the hooks volume exists only with hook sidecars).
//!
//! KubeVirt's rules for the socket (`validateSocketPath` in virt-launcher, its plugin
//! policies): a path under `/var/run/kubevirt-plugin/<plugin>/`, ending in `.sock`, not a
//! symlink, within a unix socket path (108 bytes with the NUL). The sidecar mounts the
//! pod's `kubevirt-plugin-sockets` volume with `subPath: <plugin>` at that same directory,
//! so its path and the compute container's are the same.

use std::path::{Path, PathBuf};

use tonic::{Request, Response, Status};

use super::hook::{CHANNEL_SOCKET, Definer, HOOK_NAME};
use super::proto::plugins::domain_hook_service_server::DomainHookService;
use super::proto::plugins::{MutateDomainRequest, MutateDomainResponse};
use crate::agent::AgentAddress;

/// Where KubeVirt looks for plugin sockets.
pub(crate) const PLUGIN_SOCKETS_DIR: &str = "/var/run/kubevirt-plugin";
/// The plugin's name: its `Plugin` resource's, and its directory's under
/// [`PLUGIN_SOCKETS_DIR`] (deploy/plugin/plugin.yaml).
pub(crate) const PLUGIN_NAME: &str = "probe-gateway";
/// The socket the `Plugin` resource names, as the gateway and compute both see it.
pub(crate) const DEFAULT_PLUGIN_SOCKET: &str =
    "/var/run/kubevirt-plugin/probe-gateway/domain-hook.sock";
/// A unix socket path holds 108 bytes with its NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The invocation contexts KubeVirt 1.9 sends.
const BOOT: &str = "Boot";
const MIGRATION_TARGET: &str = "MigrationTarget";

/// The plugin socket's path, checked against KubeVirt's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PluginSocket(PathBuf);

impl PluginSocket {
    /// Checks `path` as virt-launcher and KubeVirt's policy will: an absolute, clean path
    /// ending in `.sock`, at most 107 bytes, in a directory of its own under
    /// [`PLUGIN_SOCKETS_DIR`] (a test may put it elsewhere: then only the warning is
    /// logged, since KubeVirt would refuse such a `Plugin`).
    pub(crate) fn parse(path: &Path) -> Result<PluginSocket, String> {
        let shown = path.display();
        let text = path
            .to_str()
            .ok_or_else(|| format!("{shown} is not UTF-8"))?;
        if !path.is_absolute() {
            return Err(format!("{shown} is not an absolute path"));
        }
        if text.contains("/../")
            || text.contains("/./")
            || text.contains("//")
            || text.ends_with('/')
        {
            return Err(format!(
                "{shown} is not a clean path (KubeVirt refuses '..', '.' and doubled separators)"
            ));
        }
        if !text.ends_with(".sock") {
            return Err(format!(
                "{shown} does not end in .sock, as KubeVirt requires"
            ));
        }
        if text.len() > MAX_SOCKET_PATH {
            return Err(format!(
                "{shown} is {} bytes; a unix socket path holds {MAX_SOCKET_PATH}",
                text.len()
            ));
        }
        let channel = path.with_file_name(CHANNEL_SOCKET);
        if channel.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the private channel's socket beside it, {}, is over {MAX_SOCKET_PATH} bytes",
                channel.display()
            ));
        }
        Ok(PluginSocket(path.to_path_buf()))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// The plugin's directory: the `subPath` of the plugin volume mounted here.
    pub(crate) fn dir(&self) -> &Path {
        self.0.parent().unwrap_or(Path::new("/"))
    }

    /// Whether the socket lies where KubeVirt looks: `/var/run/kubevirt-plugin/<name>/`.
    pub(crate) fn under_kubevirt_dir(&self) -> bool {
        self.dir().parent() == Some(Path::new(PLUGIN_SOCKETS_DIR))
    }

    /// The private channel's socket: beside the plugin's, on the same volume, at the same
    /// path for QEMU (compute) and for the gateway.
    pub(crate) fn channel_path(&self) -> PathBuf {
        self.dir().join(CHANNEL_SOCKET)
    }

    pub(crate) fn agent_address(&self) -> AgentAddress {
        AgentAddress::PrivateChannel {
            socket: self.channel_path(),
            shared_layout: self.channel_path(),
        }
    }
}

/// `kubevirt.hooks.plugins.v1alpha1.DomainHookService`.
pub(super) struct DomainHooks {
    pub definer: Definer,
}

#[tonic::async_trait]
impl DomainHookService for DomainHooks {
    async fn mutate_domain(
        &self,
        request: Request<MutateDomainRequest>,
    ) -> Result<Response<MutateDomainResponse>, Status> {
        let request = request.into_inner();
        if request.domain_type != "libvirt" {
            return Err(Status::invalid_argument(format!(
                "{HOOK_NAME}: domain_type {:?}: only libvirt domains are edited",
                request.domain_type
            )));
        }
        let context = request
            .sidecar_context
            .map(|context| context.invocation_context)
            .unwrap_or_default();
        match context.as_str() {
            BOOT => tracing::info!(context, "MutateDomain: the VM boots"),
            // The domain returned is the incoming one's: the channel is added (once) as at
            // boot. The guest and its second agent arrive with the migration; until then the
            // gateway's liveness is in its grace, its readiness fails.
            MIGRATION_TARGET => tracing::info!(
                context,
                "MutateDomain: this pod is a migration's target; the channel comes up when the guest arrives"
            ),
            // KubeVirt 1.9 sends no other context (MigrationSource exists but is never
            // sent); the edit is idempotent, so one is handled as a boot.
            other => tracing::warn!(
                context = other,
                "MutateDomain with an invocation context KubeVirt 1.9 does not send; handled as a boot"
            ),
        }
        let domain = self.definer.define(&request.domain, &request.vmi).await?;
        Ok(Response::new(MutateDomainResponse { domain }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubevirts_socket_rules_are_checked() {
        let ok = PluginSocket::parse(Path::new(DEFAULT_PLUGIN_SOCKET)).unwrap();
        assert!(ok.under_kubevirt_dir());
        assert_eq!(
            ok.channel_path(),
            Path::new("/var/run/kubevirt-plugin/probe-gateway/probe-gateway-qga.sock")
        );
        let long = format!(
            "/var/run/kubevirt-plugin/probe-gateway/{}.sock",
            "x".repeat(70)
        );
        for (path, says) in [
            ("relative/domain-hook.sock", "is not an absolute path"),
            (
                "/var/run/kubevirt-plugin/probe-gateway/hook",
                "does not end in .sock",
            ),
            (
                "/var/run/kubevirt-plugin/probe-gateway/../x/hook.sock",
                "is not a clean path",
            ),
            (
                "/var/run/kubevirt-plugin//probe-gateway/hook.sock",
                "is not a clean path",
            ),
            (long.as_str(), "bytes; a unix socket path holds 107"),
        ] {
            let error = PluginSocket::parse(Path::new(path)).unwrap_err();
            assert!(error.contains(says), "{path}: {error}");
        }
        let elsewhere = PluginSocket::parse(Path::new("/tmp/x/domain-hook.sock")).unwrap();
        assert!(!elsewhere.under_kubevirt_dir());
    }
}
