//! KubeVirt's hook-sidecar gRPC services, served on one unix socket in the hooks directory
//! (docs/kubevirt.md, "The hook protocol"): `Info` says who the gateway is and which hook points it wants;
//! `OnDefineDomain` reads the VMI's checks and adds the private agent channel to the
//! domain; `Shutdown` (after QEMU has exited) stops the gateway. As a KubeVirt 1.9 plugin
//! ([`super::plugin`]) the same definition is served as `MutateDomain` on the plugin's
//! socket instead ([`Definer`] is what both share).
//!
//! The services decide and answer; the application applies. They hand what they learnt to
//! [`crate::app`] as [`HookEvent`]s and, for a definition, wait until it is in force, so
//! that `/ready` answers with the VM's checks as soon as `OnDefineDomain` has returned.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::domain::{self, CHANNEL_NAME};
use super::plugin::{DomainHooks, PluginSocket};
use super::proto::info::info_server::{Info, InfoServer};
use super::proto::info::{HookPoint, InfoParams, InfoResult};
use super::proto::plugins::domain_hook_service_server::DomainHookServiceServer;
use super::proto::{v1alpha2, v1alpha3};
use crate::agent::AgentAddress;
use crate::config::{GatewayFile, HookedVmi};

/// The hooks directory KubeVirt mounts into hook sidecars and the compute container.
pub(crate) const KUBEVIRT_HOOKS_DIR: &str = "/var/run/kubevirt-hooks";
/// The gateway's gRPC socket in its hooks directory: the one socket virt-launcher dials.
pub(crate) const HOOK_SOCKET: &str = "probe-gateway.sock";
/// The private agent channel's socket, created by QEMU.
pub(crate) const CHANNEL_SOCKET: &str = "probe-gateway-qga.sock";
/// The name `Info` gives; virt-launcher logs it.
pub(crate) const HOOK_NAME: &str = "probe-gateway";
/// The least time the hook server gets to finish its calls at shutdown.
const MIN_STOP_GRACE: Duration = Duration::from_secs(1);
/// The container name KubeVirt gives the first hook sidecar of a VM.
pub(crate) const DEFAULT_CONTAINER_NAME: &str = "hook-sidecar-0";

/// What hook mode needs to know, from flags and environment.
#[derive(Debug, Clone)]
pub(crate) struct HookSetup {
    /// How KubeVirt calls the gateway: as a hook sidecar, or as a plugin.
    pub place: HookPlace,
    /// Whether the definition adds the private channel: true when the agent in force is
    /// that channel (no `--agent` and no `agent` in a config file).
    pub add_channel: bool,
    /// Whether the checks come from the VMI (no `--config` or `--config-text`).
    pub checks_from_vmi: bool,
}

/// Where the gateway is called from.
#[derive(Debug, Clone)]
pub(crate) enum HookPlace {
    /// A hook sidecar (`--kubevirt-hook`, the `Sidecar` gate): `Info`, `OnDefineDomain`
    /// and `Shutdown` on [`HOOK_SOCKET`] in the hooks directory.
    Sidecar {
        /// The hooks directory as the gateway sees it (`--hooks-dir`).
        hooks_dir: PathBuf,
        /// This sidecar's container name (`CONTAINER_NAME`, set by KubeVirt).
        container_name: String,
    },
    /// A plugin sidecar (`--kubevirt-plugin`, KubeVirt 1.9's `Plugins` gate):
    /// `MutateDomain` on this socket.
    Plugin(PluginSocket),
}

impl HookSetup {
    /// The channel's socket as the compute container (QEMU) sees it. As a hook sidecar:
    /// KubeVirt from 1.6 mounts each sidecar's sub-directory of the hooks volume as the
    /// sidecar's hooks directory and the whole volume in the compute container. As a
    /// plugin: beside the plugin's socket, the same path in both containers.
    pub(crate) fn channel_path_for_qemu(&self) -> String {
        match &self.place {
            HookPlace::Sidecar { container_name, .. } => {
                format!("{KUBEVIRT_HOOKS_DIR}/{container_name}/{CHANNEL_SOCKET}")
            }
            HookPlace::Plugin(socket) => socket.channel_path().display().to_string(),
        }
    }

    /// Where the gateway finds that socket. As a hook sidecar: in its hooks directory
    /// (KubeVirt 1.6 and later), or in the sub-directory named after the container that
    /// [`prepare_shared_layout`](Self::prepare_shared_layout) makes for older releases,
    /// which mount the same whole volume in every container.
    pub(crate) fn agent_address(&self) -> AgentAddress {
        match &self.place {
            HookPlace::Sidecar {
                hooks_dir,
                container_name,
            } => AgentAddress::PrivateChannel {
                socket: hooks_dir.join(CHANNEL_SOCKET),
                shared_layout: hooks_dir.join(container_name).join(CHANNEL_SOCKET),
            },
            HookPlace::Plugin(socket) => socket.agent_address(),
        }
    }

    /// What the gateway is waiting for, named in the log.
    pub(crate) fn definition_call(&self) -> &'static str {
        match self.place {
            HookPlace::Sidecar { .. } => "OnDefineDomain",
            HookPlace::Plugin(_) => "MutateDomain",
        }
    }

    /// Checks the container name: it becomes a path component in the domain XML.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let HookPlace::Sidecar { container_name, .. } = &self.place else {
            return Ok(());
        };
        let name = container_name;
        let dns_label = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if dns_label {
            Ok(())
        } else {
            Err(format!(
                "container name {name:?} (CONTAINER_NAME) is not a Kubernetes container name: \
                 lower-case letters, digits and '-', at most 63"
            ))
        }
    }

    /// Makes `<hooks dir>/<container name>/`, with the hooks directory's own permissions,
    /// so that with KubeVirt before 1.6 (one volume, mounted whole everywhere) the path
    /// given to QEMU exists and QEMU may bind in it. With 1.6 and later it is an unused
    /// directory, and virt-launcher counts only non-directory entries.
    fn prepare_shared_layout(hooks_dir: &Path, container_name: &str) -> io::Result<()> {
        let mode = std::fs::metadata(hooks_dir)?.permissions().mode() & 0o7777;
        let dir = hooks_dir.join(container_name);
        match std::fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// What the services tell the application.
#[derive(Debug)]
pub(crate) enum HookEvent {
    /// The VM is being defined with these checks (`None`: a config file gave them).
    /// `applied` is answered once they are in force, or with why they cannot be.
    Defined {
        checks: Option<Box<GatewayFile>>,
        /// The VMI's `status.vsockCID` when it has one, for `vsock://vmi:PORT`.
        vsock_cid: Option<u32>,
        applied: oneshot::Sender<Result<(), String>>,
    },
    /// QEMU has exited: finish and exit 0.
    Shutdown,
}

/// Why the hook server could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    #[error("hooks dir {dir}: {source}")]
    HooksDir { dir: String, source: io::Error },
    #[error("cannot listen on {socket}: {source}")]
    Listen { socket: String, source: io::Error },
    #[error("{0}")]
    Setup(String),
}

/// The running gRPC server.
pub(crate) struct HookServer {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl HookServer {
    /// Binds [`HOOK_SOCKET`] in the hooks directory (or the plugin's socket) and serves.
    /// Must run on a tokio runtime.
    pub(crate) fn start(
        setup: &HookSetup,
        events: mpsc::UnboundedSender<HookEvent>,
    ) -> Result<HookServer, HookError> {
        setup.validate().map_err(HookError::Setup)?;
        let dir = match &setup.place {
            HookPlace::Sidecar { hooks_dir, .. } => hooks_dir.clone(),
            HookPlace::Plugin(socket) => socket.dir().to_path_buf(),
        };
        let dir_error = |source| HookError::HooksDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(dir_error)?;
        let socket = match &setup.place {
            HookPlace::Sidecar {
                hooks_dir,
                container_name,
            } => {
                if setup.add_channel {
                    HookSetup::prepare_shared_layout(hooks_dir, container_name)
                        .map_err(dir_error)?;
                }
                hooks_dir.join(HOOK_SOCKET)
            }
            HookPlace::Plugin(socket) => {
                refuse_symlink(&dir).map_err(dir_error)?;
                socket.path().to_path_buf()
            }
        };
        let listener = bind(&socket).map_err(|source| HookError::Listen {
            socket: socket.display().to_string(),
            source,
        })?;
        let definer = Definer {
            setup: setup.clone(),
            events,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = UnixListenerStream::new(listener);
        let shutdown = async {
            let _ = stopped.await;
        };
        let serving = match &setup.place {
            HookPlace::Sidecar { .. } => {
                let callbacks = Callbacks { definer };
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(InfoServer::new(HookInfo))
                        .add_service(v1alpha3::callbacks_server::CallbacksServer::new(
                            callbacks.clone(),
                        ))
                        .add_service(v1alpha2::callbacks_server::CallbacksServer::new(callbacks))
                        .serve_with_incoming_shutdown(incoming, shutdown),
                )
            }
            HookPlace::Plugin(plugin) => {
                if !plugin.under_kubevirt_dir() {
                    tracing::warn!(socket = %socket.display(), "the plugin socket is not under /var/run/kubevirt-plugin/<plugin>/, where KubeVirt looks");
                }
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(DomainHookServiceServer::new(DomainHooks { definer }))
                        .serve_with_incoming_shutdown(incoming, shutdown),
                )
            }
        };
        tracing::info!(socket = %socket.display(), call = setup.definition_call(), "serving KubeVirt's hook services");
        Ok(HookServer {
            socket,
            stop: Some(stop),
            serving,
        })
    }

    /// Stops accepting calls, lets calls in flight finish within `grace` (at least
    /// [`MIN_STOP_GRACE`], so that the reply to `Shutdown` goes out; virt-launcher may hold
    /// its connection open beyond that), and removes the socket.
    pub(crate) async fn stop(mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(grace.max(MIN_STOP_GRACE), &mut self.serving).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the hook server failed"),
            Ok(Err(error)) => tracing::warn!(%error, "the hook server task failed"),
            Err(_) => self.serving.abort(),
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Refuses a directory that is a symlink: virt-launcher refuses a plugin socket path that
/// goes through one.
fn refuse_symlink(dir: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symlink, which KubeVirt refuses for a plugin socket's path",
        ));
    }
    Ok(())
}

/// Binds a unix socket at `path`, replacing a socket left by an earlier run of this
/// container (the hooks directory outlives container restarts). Anything else at the path
/// is not ours and is an error.
fn bind(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if metadata.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // virt-launcher may run under another uid than the sidecar; the directory is the pod's
    // own volume, shared with the compute container only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// `kubevirt.hooks.info.Info`.
struct HookInfo;

#[tonic::async_trait]
impl Info for HookInfo {
    async fn info(&self, _: Request<InfoParams>) -> Result<Response<InfoResult>, Status> {
        let point = |name: &str| HookPoint {
            name: name.to_string(),
            priority: 0,
        };
        Ok(Response::new(InfoResult {
            name: HOOK_NAME.to_string(),
            hook_points: vec![point("OnDefineDomain"), point("Shutdown")],
            // virt-launcher picks the highest it knows; v1alpha2 has no Shutdown.
            versions: vec!["v1alpha2".to_string(), "v1alpha3".to_string()],
        }))
    }
}

/// The callbacks of both versions: their `OnDefineDomain` is the same.
#[derive(Clone)]
struct Callbacks {
    definer: Definer,
}

/// A VM's definition, whichever call brings it (`OnDefineDomain`, `MutateDomain`): the
/// checks read from the VMI, the channel added to the domain, the application told.
#[derive(Clone)]
pub(super) struct Definer {
    setup: HookSetup,
    events: mpsc::UnboundedSender<HookEvent>,
}

impl Definer {
    /// Checks the VMI's checks and the domain, and answers the domain to define. Every
    /// problem is reported at once, as `INVALID_ARGUMENT`: the VM does not start, and the
    /// message is in virt-launcher's log and the gateway's.
    pub(super) async fn define(&self, domain_xml: &[u8], vmi: &[u8]) -> Result<Vec<u8>, Status> {
        let call = self.setup.definition_call();
        let mut problems = Vec::new();
        let vmi = HookedVmi::parse(vmi);
        let checks = if self.setup.checks_from_vmi {
            match vmi.checks() {
                Ok(file) => Some(Box::new(file)),
                Err(errors) => {
                    problems.extend(errors.0.iter().map(|e| format!("VMI {e}")));
                    None
                }
            }
        } else {
            None
        };
        // Taken whenever the VMI has one: the agent in force, or one a config reload names
        // later, may be `vsock://vmi:PORT`. Whether it is required is the gateway's call
        // (the agent in force may change), answered through `applied`.
        let vsock_cid = vmi.vsock_cid().ok();
        let xml = if self.setup.add_channel {
            match domain::add_agent_channel(domain_xml, &self.setup.channel_path_for_qemu()) {
                Ok(edited) => {
                    if !edited.added {
                        tracing::info!(
                            channel = CHANNEL_NAME,
                            "the domain already has the private agent channel; unchanged"
                        );
                    }
                    Some(edited.xml.into_bytes())
                }
                Err(error) => {
                    problems.push(error.to_string());
                    None
                }
            }
        } else {
            Some(domain_xml.to_vec())
        };
        let (Some(xml), true) = (xml, problems.is_empty()) else {
            for problem in &problems {
                tracing::error!(
                    problem,
                    call,
                    "the definition refused: the VM will not start"
                );
            }
            return Err(Status::invalid_argument(format!(
                "{HOOK_NAME}: {}",
                problems.join("; ")
            )));
        };
        let (applied, done) = oneshot::channel();
        self.events
            .send(HookEvent::Defined {
                checks,
                vsock_cid,
                applied,
            })
            .map_err(|_| Status::unavailable("the gateway is shutting down"))?;
        match done.await {
            Ok(Ok(())) => Ok(xml),
            Ok(Err(problem)) => {
                tracing::error!(
                    problem,
                    call,
                    "the definition refused: the VM will not start"
                );
                Err(Status::invalid_argument(format!("{HOOK_NAME}: {problem}")))
            }
            Err(_) => Err(Status::unavailable("the gateway is shutting down")),
        }
    }
}

impl Callbacks {
    async fn define(&self, domain_xml: &[u8], vmi: &[u8]) -> Result<Vec<u8>, Status> {
        self.definer.define(domain_xml, vmi).await
    }

    fn shutdown(&self) {
        tracing::info!("KubeVirt's Shutdown hook: QEMU has exited; stopping");
        let _ = self.definer.events.send(HookEvent::Shutdown);
    }
}

#[tonic::async_trait]
impl v1alpha3::callbacks_server::Callbacks for Callbacks {
    async fn on_define_domain(
        &self,
        request: Request<v1alpha3::OnDefineDomainParams>,
    ) -> Result<Response<v1alpha3::OnDefineDomainResult>, Status> {
        let params = request.into_inner();
        let domain_xml = self.define(&params.domain_xml, &params.vmi).await?;
        Ok(Response::new(v1alpha3::OnDefineDomainResult { domain_xml }))
    }

    async fn pre_cloud_init_iso(
        &self,
        _: Request<v1alpha3::PreCloudInitIsoParams>,
    ) -> Result<Response<v1alpha3::PreCloudInitIsoResult>, Status> {
        Err(Status::unimplemented(
            "PreCloudInitIso is not a hook point of the gateway",
        ))
    }

    async fn shutdown(
        &self,
        _: Request<v1alpha3::ShutdownParams>,
    ) -> Result<Response<v1alpha3::ShutdownResult>, Status> {
        Callbacks::shutdown(self);
        Ok(Response::new(v1alpha3::ShutdownResult {}))
    }
}

#[tonic::async_trait]
impl v1alpha2::callbacks_server::Callbacks for Callbacks {
    async fn on_define_domain(
        &self,
        request: Request<v1alpha2::OnDefineDomainParams>,
    ) -> Result<Response<v1alpha2::OnDefineDomainResult>, Status> {
        let params = request.into_inner();
        let domain_xml = self.define(&params.domain_xml, &params.vmi).await?;
        Ok(Response::new(v1alpha2::OnDefineDomainResult { domain_xml }))
    }

    async fn pre_cloud_init_iso(
        &self,
        _: Request<v1alpha2::PreCloudInitIsoParams>,
    ) -> Result<Response<v1alpha2::PreCloudInitIsoResult>, Status> {
        Err(Status::unimplemented(
            "PreCloudInitIso is not a hook point of the gateway",
        ))
    }
}
