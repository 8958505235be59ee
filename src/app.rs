//! Building and running the gateway: [`Application::build`] binds the port, puts the checks
//! in force (or, in KubeVirt hook mode, starts the hook services and waits for the VM's
//! definition); [`Application::run_until_stopped`] serves until SIGTERM, SIGINT or KubeVirt's
//! Shutdown hook, then drains in-flight requests within the shutdown grace and closes the
//! agent connection.
//!
//! Only the wiring lives here: reloads are [`crate::reload`]'s, the maintenance pause
//! [`crate::maintenance`]'s, what the VM's definition
//! brings is [`crate::kubevirt::vm`]'s, the policy for replacing the checks in force is
//! [`crate::probe::InForce`]'s. Nothing the main loop does waits on an agent.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use tokio::sync::mpsc;

use crate::config::{Overrides, Settings};
use crate::http::server::{BindError, bind};
use crate::http::{AppState, Drained, HttpServer};
use crate::kubevirt::vm::apply_definition;
use crate::kubevirt::{
    HookEvent, HookServer, HookSetup, VmKnowledge, WAITING_FOR_DEFINITION, hook::HookError,
};
use crate::maintenance::PauseFollower;
use crate::metrics::Metrics;
use crate::probe::{InForce, never_paused};
use crate::reload::{ConfigReloader, ConfigSource, or_never};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("listen: {0}")]
    Bind(#[from] BindError),
    #[error("kubevirt hook: {0}")]
    Hook(#[from] HookError),
}

/// KubeVirt hook mode: how to set the hook up, and how to resolve the settings of the
/// checks the VMI brings (the flags and environment given at start).
pub(crate) struct HookMode {
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
pub(crate) struct Application {
    server: HttpServer,
    in_force: Arc<InForce>,
    metrics: Arc<Metrics>,
    hook: Option<Hook>,
    /// SIGHUP, and the config file's changes when there is a file.
    reloader: ConfigReloader,
    /// Follows the pod's annotations for a maintenance pause, when given them.
    _pause_follower: Option<PauseFollower>,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listen address and puts `settings`' checks in force; in hook mode whose
    /// checks come from the VMI, starts the hook services instead and waits. Must run
    /// inside an actix system (`actix_web::rt::System`).
    ///
    /// `config` is the file `settings` came from (and the text read), to reload.
    pub(crate) fn build(
        settings: Settings,
        hook_mode: Option<HookMode>,
        config: Option<(ConfigSource, String)>,
        pod_annotations: Option<PathBuf>,
    ) -> Result<Application, StartError> {
        let listen = settings.server.listen;
        let listener = bind(listen)?;
        let local_addr = listener.local_addr().map_err(|source| BindError {
            address: listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let shutdown_grace = settings.server.shutdown_grace;
        // Before serving: a change from now on is seen.
        let reloader = ConfigReloader::start(config, &settings);
        let agent = settings.checks.agent.to_string();
        let waits = hook_mode
            .as_ref()
            .is_some_and(|mode| mode.setup.checks_from_vmi);
        // Before the first set: a pause already in the pod's annotations holds its probes.
        let (pause_follower, pause) = match pod_annotations {
            Some(path) => {
                let (follower, pause) = PauseFollower::start(path, Arc::clone(&metrics));
                (Some(follower), pause)
            }
            None => (None, never_paused()),
        };
        let in_force = Arc::new(InForce::new(WAITING_FOR_DEFINITION, pause));
        if !waits {
            in_force.put(settings.checks, &metrics);
        }
        let hook_call = hook_mode.as_ref().map(|mode| mode.setup.definition_call());
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
            in_force: Arc::clone(&in_force),
            metrics: Arc::clone(&metrics),
        });
        let server =
            HttpServer::start(listener, state, shutdown_grace).map_err(|source| BindError {
                address: local_addr,
                source,
            })?;
        let checks_from = match (&hook_call, waits) {
            (Some(call), true) => format!("the VMI, at {call}"),
            _ => "the config".to_string(),
        };
        tracing::info!(address = %local_addr, %agent, checks_from, "listening");
        Ok(Application {
            server,
            in_force,
            metrics,
            hook,
            reloader,
            _pause_follower: pause_follower,
            shutdown_grace,
        })
    }

    /// Serves until SIGTERM, SIGINT or KubeVirt's Shutdown hook, then shuts down gracefully.
    pub(crate) async fn run_until_stopped(self) -> io::Result<()> {
        let Application {
            mut server,
            in_force,
            metrics,
            hook,
            mut reloader,
            shutdown_grace,
            _pause_follower,
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
        // `None`: not a hook sidecar, which knows no VM.
        let mut vm = hook_server
            .as_ref()
            .map(|_| VmKnowledge::AwaitingDefinition);
        let reason = loop {
            tokio::select! {
                result = server.ended() => {
                    close(&in_force, hook_server, shutdown_grace).await;
                    return result.map(|_| ());
                }
                signal = &mut stop => match signal {
                    Ok(signal) => break signal,
                    Err(error) => {
                        tracing::error!(%error, "cannot wait for signals; stopping");
                        server.abort();
                        close(&in_force, hook_server, shutdown_grace).await;
                        return Err(error);
                    }
                },
                Some(cause) = reloader.next() => {
                    reloader.reload(cause, vm, &in_force, &metrics);
                }
                Some(event) = or_never(hook_events.as_mut().map(|events| events.recv())) => match event {
                    HookEvent::Defined { checks: file, vsock_cid, applied } => {
                        let defined = VmKnowledge::Defined { vsock_cid };
                        let outcome = apply_definition(
                            &in_force,
                            file.map(|file| *file),
                            reloader.configured(),
                            &overrides,
                            defined,
                            &metrics,
                        );
                        if outcome.is_ok() {
                            vm = Some(defined);
                            reloader.retry_if_rejected();
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
        close(&in_force, hook_server, shutdown_grace).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Stops the hook services and closes the agent connection of the set in force.
async fn close(in_force: &InForce, hook: Option<HookServer>, grace: Duration) {
    if let Some(hook) = hook {
        hook.stop(grace).await;
    }
    if let Some(set) = in_force.take() {
        set.close().await;
    }
}

/// The first of SIGTERM and SIGINT.
pub(crate) async fn stop_signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
