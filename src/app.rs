//! Building and running the gateway: [`Application::build`] binds the port, puts the checks
//! in force (or, in KubeVirt hook mode, starts the hook services and waits for the VM's
//! definition); [`Application::run_until_stopped`] serves until SIGTERM, SIGINT or KubeVirt's
//! Shutdown hook, then drains in-flight requests within the shutdown grace and closes the
//! agent connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{GatewayFile, Overrides, Settings};
use crate::http::{self, AppState};
use crate::kubevirt::{HookEvent, HookServer, HookSetup, hook::HookError};
use crate::metrics::Metrics;
use crate::probe::{CheckSet, ChecksInForce};

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
    server: actix_web::dev::Server,
    local_addr: SocketAddr,
    checks: Arc<ChecksInForce>,
    metrics: Arc<Metrics>,
    hook: Option<Hook>,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listen address and puts `settings`' checks in force; in hook mode whose
    /// checks come from the VMI, starts the hook services instead and waits. Must run
    /// inside an actix system (`actix_web::rt::System`).
    pub fn build(
        settings: Settings,
        hook_mode: Option<HookMode>,
    ) -> Result<Application, StartError> {
        let listener = bind(settings.listen)?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            address: settings.listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let shutdown_grace = settings.shutdown_grace;
        let agent = settings.agent.to_string();
        let waits = hook_mode
            .as_ref()
            .is_some_and(|mode| mode.setup.checks_from_vmi);
        let initial = (!waits).then(|| CheckSet::start(settings, &metrics));
        let checks = Arc::new(ChecksInForce::new(initial, WAITING_FOR_DEFINITION));
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
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(actix_web::middleware::from_fn(http::count_requests))
                .configure(http::configure)
        })
        // Probes are light and every handler awaits the agent task: one worker thread
        // serves them all and keeps the sidecar small.
        .workers(1)
        .max_connections(1024)
        .disable_signals()
        .shutdown_timeout(shutdown_grace.as_secs())
        .listen(listener)
        .map_err(|source| StartError::Bind {
            address: local_addr,
            source,
        })?
        .run();
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
            server,
            checks,
            metrics,
            hook,
            shutdown_grace,
            ..
        } = self;
        let (hook_server, mut hook_events, overrides) = match hook {
            Some(Hook {
                server,
                events,
                overrides,
            }) => (Some(server), Some(events), Some(overrides)),
            None => (None, None, None),
        };
        let handle = server.handle();
        let mut serving = tokio::spawn(server);
        let stop = stop_signal();
        tokio::pin!(stop);
        let reason = loop {
            tokio::select! {
                result = &mut serving => {
                    close(&checks, hook_server, shutdown_grace).await;
                    return result.map_err(io::Error::other)?;
                }
                signal = &mut stop => match signal {
                    Ok(signal) => break signal,
                    Err(error) => {
                        tracing::error!(%error, "cannot wait for signals; stopping");
                        handle.stop(false).await;
                        close(&checks, hook_server, shutdown_grace).await;
                        return Err(error);
                    }
                },
                Some(event) = next_event(&mut hook_events) => match event {
                    HookEvent::Defined { checks: file, applied } => {
                        let outcome = match (file, &overrides) {
                            (Some(file), Some(overrides)) => {
                                apply_definition(&checks, *file, overrides, &metrics).await
                            }
                            _ => Ok(()),
                        };
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
        let started = Instant::now();
        handle.stop(true).await;
        let _ = serving.await;
        if started.elapsed() >= shutdown_grace && !shutdown_grace.is_zero() {
            tracing::warn!(
                "shutdown grace elapsed with requests still in flight; they were dropped"
            );
        }
        close(&checks, hook_server, shutdown_grace).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The next hook event, or never when there is no hook (so `select!` ignores the branch).
async fn next_event(events: &mut Option<mpsc::UnboundedReceiver<HookEvent>>) -> Option<HookEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Puts the VMI's checks in force. The same checks again (a migration target's second
/// definition, a retry) keep the set; other checks replace it. A new set keeps the agent
/// connection when the agent is the same: the private channel serves one client at a time,
/// so a second connection would only wait behind the first.
async fn apply_definition(
    checks: &ChecksInForce,
    file: GatewayFile,
    overrides: &Overrides,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let summary = file.summary();
    let settings = Settings::resolve(file, overrides.clone()).map_err(|e| e.to_string())?;
    let current = checks.current().ok();
    if let Some(current) = &current
        && current.settings == settings
    {
        tracing::info!("the VM is defined again with the same checks; kept");
        return Ok(());
    }
    tracing::info!(checks = %summary, "the VM is defined: its checks are in force");
    let reusable = current.as_ref().filter(|current| {
        current.settings.agent == settings.agent
            && current.settings.output_excerpt_bytes == settings.output_excerpt_bytes
    });
    let set = match reusable {
        Some(current) => CheckSet::with_agent(settings, current.agent.clone(), metrics),
        None => {
            if let Some(old) = &current {
                old.agent.close().await;
            }
            CheckSet::start(settings, metrics)
        }
    };
    checks.replace(set);
    Ok(())
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
