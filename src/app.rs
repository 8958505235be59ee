//! Building and running the gateway: [`Application::build`] binds the port, puts the checks
//! in force (or, in KubeVirt hook mode, starts the hook services and waits for the VM's
//! definition); [`Application::run_until_stopped`] serves until SIGTERM, SIGINT or KubeVirt's
//! Shutdown hook, then drains in-flight requests within the shutdown grace and closes the
//! agent connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use tokio::sync::mpsc;

use crate::agent::{AgentAddress, VSOCK_OF_VMI_NEEDS_HOOK};
use crate::config::{GatewayFile, Overrides, Settings};
use crate::http::{AppState, Drained, HttpServer};
use crate::kubevirt::{HookEvent, HookServer, HookSetup, hook::HookError};
use crate::metrics::Metrics;
use crate::probe::{CheckSet, ChecksInForce};
use crate::reload::{ConfigSource, ConfigWatch};

/// What `/ready` and `/live` say in hook mode before `OnDefineDomain`.
pub const WAITING_FOR_DEFINITION: &str = "waiting for the VM definition: the checks come from \
    the VMI's probe-gateway.kubevirt.io/probes annotation at KubeVirt's OnDefineDomain hook";

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listen: cannot bind {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("kubevirt hook: {0}")]
    Hook(#[from] HookError),
}

/// KubeVirt hook mode: how to set the hook up, and how to resolve the settings of the
/// checks the VMI brings (the flags and environment given at start).
pub struct HookMode {
    pub setup: HookSetup,
    pub overrides: Overrides,
}

/// The hook services and what they report.
struct Hook {
    server: HookServer,
    events: mpsc::UnboundedReceiver<HookEvent>,
    overrides: Overrides,
}

/// A built gateway: bound, checks in force or awaited, not yet serving.
pub struct Application {
    server: HttpServer,
    local_addr: SocketAddr,
    checks: Arc<ChecksInForce>,
    metrics: Arc<Metrics>,
    hook: Option<Hook>,
    /// The config file, reloaded on SIGHUP and when it changes.
    reloads: Option<Reloads>,
    /// Without a config file, SIGHUP is still caught (its default action would end the
    /// process) and only logged.
    idle_hangup: Option<tokio::signal::unix::Signal>,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listen address and puts `settings`' checks in force; in hook mode whose
    /// checks come from the VMI, starts the hook services instead and waits. Must run
    /// inside an actix system (`actix_web::rt::System`).
    ///
    /// `config` is the file `settings` came from (and the text read), to reload.
    pub fn build(
        settings: Settings,
        hook_mode: Option<HookMode>,
        config: Option<(ConfigSource, String)>,
    ) -> Result<Application, StartError> {
        let listener = bind(settings.listen)?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            address: settings.listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let shutdown_grace = settings.shutdown_grace;
        // Watch before serving: a change from now on is seen.
        let reloads = config.map(|(source, text)| Reloads::start(source, text, settings.clone()));
        let idle_hangup = match reloads {
            Some(_) => None,
            None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|error| tracing::warn!(%error, "cannot catch SIGHUP"))
                .ok(),
        };
        let agent = settings.agent.to_string();
        let waits = hook_mode
            .as_ref()
            .is_some_and(|mode| mode.setup.checks_from_vmi);
        let checks = Arc::new(ChecksInForce::new(WAITING_FOR_DEFINITION));
        if !waits {
            checks.replace(CheckSet::start(settings, &metrics));
        }
        let hook = match hook_mode {
            Some(HookMode { setup, overrides }) => {
                let (events_tx, events) = mpsc::unbounded_channel();
                let server = HookServer::start(&setup, events_tx)?;
                Some(Hook {
                    server,
                    events,
                    overrides,
                })
            }
            None => None,
        };
        let state = web::Data::new(AppState {
            checks: Arc::clone(&checks),
            metrics: Arc::clone(&metrics),
        });
        let server = HttpServer::start(listener, state, shutdown_grace).map_err(|source| {
            StartError::Bind {
                address: local_addr,
                source,
            }
        })?;
        let checks_from = if waits {
            "the VMI, at OnDefineDomain"
        } else {
            "the config"
        };
        tracing::info!(address = %local_addr, %agent, checks_from, "listening");
        Ok(Application {
            server,
            local_addr,
            checks,
            metrics,
            hook,
            reloads,
            idle_hangup,
            shutdown_grace,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM, SIGINT or KubeVirt's Shutdown hook, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let Application {
            mut server,
            checks,
            metrics,
            hook,
            mut reloads,
            mut idle_hangup,
            shutdown_grace,
            ..
        } = self;
        let (hook_server, mut hook_events, overrides) = match hook {
            Some(Hook {
                server,
                events,
                overrides,
            }) => (Some(server), Some(events), overrides),
            None => (None, None, Overrides::default()),
        };
        let stop = stop_signal();
        tokio::pin!(stop);
        let mut vm = match hook_server {
            Some(_) => Vm::AwaitingDefinition,
            None => Vm::Standalone,
        };
        let reason = loop {
            tokio::select! {
                result = server.ended() => {
                    close(&checks, hook_server, shutdown_grace).await;
                    return result.map(|_| ());
                }
                signal = &mut stop => match signal {
                    Ok(signal) => break signal,
                    Err(error) => {
                        tracing::error!(%error, "cannot wait for signals; stopping");
                        server.abort();
                        close(&checks, hook_server, shutdown_grace).await;
                        return Err(error);
                    }
                },
                Some(()) = or_never(idle_hangup.as_mut().map(|hangup| hangup.recv())) => {
                    tracing::info!("SIGHUP: there is no config file to reload");
                }
                Some(forced) = or_never(reloads.as_mut().map(Reloads::next)) => {
                    if let Some(reloads) = reloads.as_mut() {
                        reloads.reload(forced, vm, &checks, &metrics).await;
                    }
                }
                Some(event) = or_never(hook_events.as_mut().map(|events| events.recv())) => match event {
                    HookEvent::Defined { checks: file, vsock_cid, applied } => {
                        let defined = Vm::Defined { vsock_cid };
                        let configured = reloads.as_ref().map(|reloads| &reloads.configured);
                        let outcome = apply_definition(
                            &checks, file.map(|file| *file), configured, &overrides, defined, &metrics,
                        )
                        .await;
                        if outcome.is_ok() {
                            vm = defined;
                            if let Some(reloads) = reloads.as_mut() {
                                reloads.retry_if_rejected();
                            }
                        }
                        let _ = applied.send(outcome);
                    }
                    HookEvent::Shutdown => break "KubeVirt's Shutdown hook",
                },
            }
        };
        // A definition arriving from now on is answered UNAVAILABLE at once (its reply
        // channel is dropped with the queue) instead of holding up the hook server's stop.
        drop(hook_events);
        tracing::info!(
            reason,
            grace_seconds = shutdown_grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
        match server.stop().await {
            Ok(Drained::Done) => {}
            Ok(Drained::GraceElapsed { dropped }) => tracing::warn!(
                connections = dropped,
                "shutdown grace elapsed with requests still in flight; they were dropped"
            ),
            Err(error) => tracing::error!(%error, "the HTTP server failed while draining"),
        }
        close(&checks, hook_server, shutdown_grace).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What the gateway knows of its VM, to resolve `vsock://vmi:PORT`.
#[derive(Debug, Clone, Copy)]
enum Vm {
    /// Not a hook sidecar: nothing tells the gateway which VM it serves.
    Standalone,
    /// A hook sidecar before `OnDefineDomain`.
    AwaitingDefinition,
    /// Defined; the VMI's `status.vsockCID` when it has one.
    Defined { vsock_cid: Option<u32> },
}

/// The settings to put in force for this VM, from the settings as configured (a config
/// file, or the VMI's checks): `vsock://vmi:PORT` becomes the VM's own vsock address. Both
/// a definition and a reload go through here, always from the configured form, so a
/// redefinition with another CID moves the checks to it.
fn settings_for_vm(mut settings: Settings, vm: Vm) -> Result<Settings, String> {
    let AgentAddress::VsockOfVmi { .. } = settings.agent else {
        return Ok(settings);
    };
    match vm {
        // Resolved at the definition; until then the checks report the agent unreachable.
        Vm::AwaitingDefinition => {}
        Vm::Defined {
            vsock_cid: Some(cid),
        } => settings.agent = settings.agent.with_vmi_cid(cid),
        Vm::Defined { vsock_cid: None } => {
            return Err(format!(
                "agent: {}: the VMI has no status.vsockCID (the VM needs \
                 spec.domain.devices.autoattachVSOCK: true and the VSOCK feature gate)",
                settings.agent
            ));
        }
        Vm::Standalone => return Err(VSOCK_OF_VMI_NEEDS_HOOK.to_string()),
    }
    Ok(settings)
}

/// Reloading the config file: SIGHUP and the directory watch.
struct Reloads {
    source: ConfigSource,
    /// The text of the config in force.
    text: String,
    /// The config in force as the file gives it (`vsock://vmi:PORT` unresolved).
    configured: Settings,
    watch: Option<ConfigWatch>,
    hangup: Option<tokio::signal::unix::Signal>,
    /// Read the file at the next turn: it changed between its first read and the start
    /// of the watch, or its last read was rejected and the VM has changed since.
    pending: bool,
    /// The last read was rejected.
    rejected: bool,
}

impl Reloads {
    fn start(source: ConfigSource, text: String, configured: Settings) -> Reloads {
        let watch = match ConfigWatch::start(&source.path) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, path = %source.path.display(), "cannot watch the config file; reload with SIGHUP");
                None
            }
        };
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| tracing::warn!(%error, "cannot wait for SIGHUP"))
            .ok();
        let pending = std::fs::read_to_string(&source.path).is_ok_and(|now| now != text);
        Reloads {
            source,
            text,
            configured,
            watch,
            hangup,
            pending,
            rejected: false,
        }
    }

    /// After a definition: a config rejected for want of the VM's vsock CID may now be
    /// good, so it is read again rather than waiting for the next change.
    fn retry_if_rejected(&mut self) {
        self.pending |= self.rejected;
    }

    /// The next reason to reload: `true` for SIGHUP (always re-read), `false` for a change
    /// in the directory (ignored when the text is the same). `None` when neither can come.
    async fn next(&mut self) -> Option<bool> {
        if std::mem::take(&mut self.pending) {
            return Some(false);
        }
        tokio::select! {
            Some(()) = or_never(self.watch.as_mut().map(ConfigWatch::changed)) => Some(false),
            Some(()) = or_never(self.hangup.as_mut().map(|hangup| hangup.recv())) => Some(true),
            else => None,
        }
    }

    /// Reads the file; a valid config replaces the one in force (requests in flight finish
    /// on the old one), an invalid one is logged with every error and the old one stays.
    async fn reload(
        &mut self,
        forced: bool,
        vm: Vm,
        checks: &ChecksInForce,
        metrics: &Arc<Metrics>,
    ) {
        let path = self.source.path.display().to_string();
        let read = self.source.read().and_then(|(text, configured)| {
            let settings = settings_for_vm(configured.clone(), vm)
                .map_err(|problem| format!("{path}: {problem}"))?;
            Ok((text, configured, settings))
        });
        match read {
            Ok((text, ..)) if text == self.text && !forced => self.rejected = false,
            Ok((text, configured, mut settings)) => {
                let listening = self.configured.listen;
                if settings.listen != listening {
                    tracing::warn!(
                        configured = %settings.listen,
                        %listening,
                        "listen changed in the config: it takes effect at the next restart"
                    );
                    // Not a change of the checks.
                    settings.listen = listening;
                }
                let outcome = put_in_force(checks, settings, metrics).await;
                metrics.record_reload(outcome);
                tracing::info!(path, outcome, "config reloaded");
                self.text = text;
                self.rejected = false;
                self.configured = Settings {
                    listen: listening,
                    ..configured
                };
            }
            Err(errors) => {
                self.rejected = true;
                for line in errors.lines() {
                    tracing::error!(
                        error = line,
                        "config reload rejected; the config in force stays"
                    );
                }
                // Counted after it is logged: whoever sees the count finds the reasons.
                metrics.record_reload("rejected");
            }
        }
    }
}

/// Awaits `next` when there is one, or never: a `select!` branch for something that may
/// not exist (no config file, not a hook sidecar).
async fn or_never<T>(next: Option<impl Future<Output = Option<T>>>) -> Option<T> {
    match next {
        Some(next) => next.await,
        None => std::future::pending().await,
    }
}

/// Puts what the VM's definition brings in force (see [`put_in_force`]): the VMI's checks
/// (`None` when a config file gave them: `configured`), resolved for the VM.
async fn apply_definition(
    checks: &ChecksInForce,
    file: Option<GatewayFile>,
    configured: Option<&Settings>,
    overrides: &Overrides,
    vm: Vm,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let (summary, configured) = match (file, configured) {
        (Some(file), _) => {
            let summary = file.summary();
            let settings = Settings::resolve(file, overrides.clone()).map_err(|e| e.to_string())?;
            (summary, settings)
        }
        (None, Some(configured)) => ("the config's".to_string(), configured.clone()),
        (None, None) => return Ok(()),
    };
    let settings = settings_for_vm(configured, vm)?;
    let agent = settings.agent.to_string();
    match put_in_force(checks, settings, metrics).await {
        "unchanged" => tracing::info!("the VM is defined again with the same checks; kept"),
        _ => {
            tracing::info!(checks = %summary, %agent, "the VM is defined: its checks are in force")
        }
    }
    Ok(())
}

/// Puts `settings`' checks in force, unless they are the ones in force ("unchanged"; a
/// migration target's second definition, a reload of the same file). A new set takes over
/// from the old one (see [`CheckSet::follow`]); requests in flight finish on the set they
/// started with, and an agent connection no longer used is closed after the swap.
async fn put_in_force(
    checks: &ChecksInForce,
    settings: Settings,
    metrics: &Arc<Metrics>,
) -> &'static str {
    let current = checks.current().ok();
    let set = match &current {
        Some(current) if current.settings == settings => return "unchanged",
        Some(current) => CheckSet::follow(current, settings, metrics),
        None => CheckSet::start(settings, metrics),
    };
    let keeps_agent = current
        .as_ref()
        .is_some_and(|current| set.shares_agent_with(current));
    checks.replace(set);
    if let (Some(old), false) = (current, keeps_agent) {
        old.agent.close().await;
    }
    "applied"
}

/// Stops the hook services and closes the agent connection of the checks in force.
async fn close(checks: &ChecksInForce, hook: Option<HookServer>, grace: Duration) {
    if let Some(hook) = hook {
        hook.stop(grace).await;
    }
    if let Some(set) = checks.take() {
        set.agent.close().await;
    }
}

/// Binds `address`; the IPv6 wildcard falls back to `0.0.0.0` on hosts without IPv6.
fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    match TcpListener::bind(address) {
        Ok(listener) => Ok(listener),
        Err(error) if address.ip().is_unspecified() && address.is_ipv6() && no_ipv6(&error) => {
            let fallback = SocketAddr::from((Ipv4Addr::UNSPECIFIED, address.port()));
            tracing::info!(%address, %fallback, "IPv6 is unavailable; listening on IPv4 only");
            TcpListener::bind(fallback).map_err(|source| StartError::Bind {
                address: fallback,
                source,
            })
        }
        Err(source) => Err(StartError::Bind { address, source }),
    }
}

fn no_ipv6(error: &io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    error.kind() == io::ErrorKind::AddrNotAvailable || error.raw_os_error() == Some(EAFNOSUPPORT)
}

async fn stop_signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
