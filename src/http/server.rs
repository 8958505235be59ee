//! The HTTP server: accepts and serves on the thread it runs on, the gateway's one runtime
//! thread, where the agent client runs too. A probe then goes from kubelet's connection to
//! the agent's socket and back without leaving that thread.
//!
//! actix-web's `HttpServer` would run an accept thread that hands every new connection to
//! worker threads, and the agent client would sit on yet another: two to four thread
//! wake-ups per probe, which measured as most of the gateway's CPU per probe
//! (BENCHMARKS.md). The app and the HTTP/1 dispatcher are actix's all the same.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Protocol};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, map_config};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpListener;
use actix_web::{App, web};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::{AppState, configure, count_requests};

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// actix-web's defaults: an idle keep-alive connection is closed after 5 s; a client
/// must send its request head within 5 s and close within 1 s of our closing.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every request in flight was answered.
    Done,
    /// The grace elapsed; this many connections were dropped.
    GraceElapsed { dropped: usize },
}

/// The running server. Must run inside an actix system (it spawns on its local set).
pub struct HttpServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<Drained>>,
}

impl HttpServer {
    /// Serves `listener` with the gateway's app until [`HttpServer::stop`].
    pub fn start(
        listener: std::net::TcpListener,
        state: web::Data<AppState>,
        grace: Duration,
    ) -> io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let (stop, stopping) = watch::channel(false);
        let task = actix_web::rt::spawn(serve(listener, state, stopping, grace));
        Ok(HttpServer { stop, task })
    }

    /// Resolves if the server ends on its own (it does not, short of a bug).
    pub async fn ended(&mut self) -> io::Result<Drained> {
        (&mut self.task).await.map_err(io::Error::other)?
    }

    /// Stops accepting, lets the requests in flight finish within the grace (idle
    /// keep-alive connections are closed at once), and drops what is left.
    pub async fn stop(self) -> io::Result<Drained> {
        let _ = self.stop.send(true);
        self.task.await.map_err(io::Error::other)?
    }

    /// Stops at once, dropping every connection.
    pub fn abort(self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    state: web::Data<AppState>,
    mut stopping: watch::Receiver<bool>,
    grace: Duration,
) -> io::Result<Drained> {
    let closing = stopping.clone();
    let app = App::new()
        .app_data(state)
        .wrap(actix_web::middleware::from_fn(count_requests))
        .configure(configure);
    let factory = HttpService::build()
        .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        .graceful_shutdown_signal(move || {
            let mut closing = closing.clone();
            async move {
                let _ = closing.wait_for(|stop| *stop).await;
            }
        })
        .finish(map_config(app.into_factory(), |()| AppConfig::default()));
    let service = Rc::new(
        factory
            .new_service(())
            .await
            .map_err(|()| io::Error::other("the HTTP service could not be built"))?,
    );
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, _)) => {
                    let service = Rc::clone(&service);
                    // The peer address is not used: no getpeername per connection.
                    connections.spawn_local(async move {
                        let _ = service.call((stream, Protocol::Http1, None)).await;
                    });
                }
                // One client's connection failed before it was accepted: nothing to do.
                Err(error) if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => {}
                // Out of file descriptors, say: back off rather than spin and flood the log.
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection; retrying shortly");
                    actix_web::rt::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let all_answered = async { while connections.join_next().await.is_some() {} };
    match tokio::time::timeout(grace, all_answered).await {
        Ok(()) => Ok(Drained::Done),
        Err(_) => {
            let dropped = connections.len();
            connections.abort_all();
            Ok(Drained::GraceElapsed { dropped })
        }
    }
}

/// The listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {address}: {source}")]
pub struct BindError {
    pub address: std::net::SocketAddr,
    pub source: io::Error,
}

/// Binds `address`; the IPv6 wildcard falls back to `0.0.0.0` on hosts without IPv6.
pub fn bind(address: std::net::SocketAddr) -> Result<std::net::TcpListener, BindError> {
    match std::net::TcpListener::bind(address) {
        Ok(listener) => Ok(listener),
        Err(error) if address.ip().is_unspecified() && address.is_ipv6() && no_ipv6(&error) => {
            let fallback =
                std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, address.port()));
            tracing::info!(%address, %fallback, "IPv6 is unavailable; listening on IPv4 only");
            std::net::TcpListener::bind(fallback).map_err(|source| BindError {
                address: fallback,
                source,
            })
        }
        Err(source) => Err(BindError { address, source }),
    }
}

/// True when `error` says the host has no IPv6 (no address, or no such address family).
fn no_ipv6(error: &io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    error.kind() == io::ErrorKind::AddrNotAvailable || error.raw_os_error() == Some(EAFNOSUPPORT)
}
