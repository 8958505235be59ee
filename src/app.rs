//! Building and running the gateway: [`Application::build`] binds the port and starts the
//! agent client; [`Application::run_until_stopped`] serves until SIGTERM or SIGINT, then
//! drains in-flight requests within the shutdown grace and closes the agent connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::time::Instant;

use crate::agent::GuestAgent;
use crate::config::{ProbeKind, Settings};
use crate::http::{self, AppState, render::Exposure};
use crate::metrics::Metrics;
use crate::probe::{Checker, LivenessGrace, Probes};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listen: cannot bind {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
}

/// A built gateway: bound, agent client running, not yet serving.
pub struct Application {
    server: actix_web::dev::Server,
    local_addr: SocketAddr,
    agent: GuestAgent,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds the listen address and starts the agent client. Must run inside an actix
    /// system (`actix_web::rt::System`).
    pub fn build(settings: Settings) -> Result<Application, StartError> {
        let listener = bind(settings.listen)?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            address: settings.listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        let agent = GuestAgent::spawn(
            settings.agent.clone(),
            settings.output_excerpt_bytes,
            Arc::clone(&metrics),
        );
        let grace = (!settings.liveness_grace.is_zero()).then(|| LivenessGrace {
            started: Instant::now(),
            window: settings.liveness_grace,
        });
        let checker = |kind: ProbeKind| {
            settings.probe(kind).map(|spec| {
                let grace = (kind == ProbeKind::Liveness).then_some(grace).flatten();
                Checker::new(
                    kind,
                    spec.clone(),
                    agent.clone(),
                    grace,
                    Arc::clone(&metrics),
                )
            })
        };
        let state = web::Data::new(AppState {
            probes: Probes {
                readiness: checker(ProbeKind::Readiness),
                liveness: checker(ProbeKind::Liveness),
            },
            exposure: Exposure {
                output: settings.expose_output,
            },
            metrics,
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
        .shutdown_timeout(settings.shutdown_grace.as_secs())
        .listen(listener)
        .map_err(|source| StartError::Bind {
            address: local_addr,
            source,
        })?
        .run();
        tracing::info!(address = %local_addr, agent = %settings.agent, "listening");
        Ok(Application {
            server,
            local_addr,
            agent,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let Application {
            server,
            agent,
            shutdown_grace,
            ..
        } = self;
        let handle = server.handle();
        let mut serving = tokio::spawn(server);
        tokio::select! {
            result = &mut serving => {
                agent.close().await;
                return result.map_err(io::Error::other)?;
            }
            signal = stop_signal() => match signal {
                Ok(signal) => tracing::info!(signal, grace_seconds = shutdown_grace.as_secs(), "shutting down: draining in-flight requests"),
                Err(error) => {
                    tracing::error!(%error, "cannot wait for signals; stopping");
                    handle.stop(false).await;
                    agent.close().await;
                    return Err(error);
                }
            }
        }
        let started = Instant::now();
        handle.stop(true).await;
        let _ = serving.await;
        if started.elapsed() >= shutdown_grace && !shutdown_grace.is_zero() {
            tracing::warn!(
                "shutdown grace elapsed with requests still in flight; they were dropped"
            );
        }
        agent.close().await;
        tracing::info!("stopped");
        Ok(())
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
