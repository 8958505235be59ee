//! The HTTP server: accepts and serves on the thread it runs on, the gateway's one runtime
//! thread, where the agent client runs too. A probe then goes from kubelet's connection to
//! the agent's socket and back without leaving that thread.
//!
//! actix-web's `HttpServer` would run an accept thread that hands every new connection to
//! worker threads, and the agent client would sit on yet another: two to four thread
//! wake-ups per probe, which measured as most of the gateway's CPU per probe
//! (BENCHMARKS.md). The app and the HTTP/1 dispatcher are actix's all the same.
//!
//! Idle, nothing here wakes: actix-http's service, whose date timer ticks every 500 ms, lives
//! only while connections are open ([`Serving`]).

use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpService, KeepAlive, Protocol, Request};
use actix_service::{IntoServiceFactory, Service, ServiceFactory, fn_factory};
use actix_web::dev::{AppConfig, ServiceRequest, ServiceResponse};
use actix_web::rt::net::{TcpListener, TcpStream};
use actix_web::web;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::AppState;

/// Connections served at once; more wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// actix-web's defaults: an idle keep-alive connection is closed after 5 s; a client
/// must send its request head within 5 s and close within 1 s of our closing.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every request in flight was answered.
    Done,
    /// The grace elapsed; this many connections were dropped.
    GraceElapsed { dropped: usize },
}

/// The running server. Must run inside an actix system (it spawns on its local set).
pub(crate) struct HttpServer {
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<Drained>>,
}

/// How an accepted TCP connection becomes the stream HTTP is served over: as it is
/// ([`PlainTcp`]), or after a TLS handshake (the admission webhook's).
pub(crate) trait Handshake: Clone + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    fn handshake(&self, tcp: TcpStream)
    -> impl Future<Output = io::Result<Self::Stream>> + 'static;
}

/// Plain HTTP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlainTcp;

impl Handshake for PlainTcp {
    type Stream = TcpStream;

    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<TcpStream>> + 'static {
        std::future::ready(Ok(tcp))
    }
}

impl HttpServer {
    /// Serves `listener` with the gateway's app until [`HttpServer::stop`].
    pub(crate) fn start(
        listener: std::net::TcpListener,
        state: web::Data<AppState>,
        grace: Duration,
    ) -> io::Result<HttpServer> {
        Self::serve(listener, move || super::app(state), PlainTcp, grace)
    }

    /// Serves `listener` with the app `app` builds, over `handshake`'s streams, until
    /// [`HttpServer::stop`].
    pub(crate) fn serve<T, B, H>(
        listener: std::net::TcpListener,
        app: impl FnOnce() -> actix_web::App<T> + 'static,
        handshake: H,
        grace: Duration,
    ) -> io::Result<HttpServer>
    where
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = actix_web::Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
        H: Handshake,
    {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let (stop, stopping) = watch::channel(false);
        let task = actix_web::rt::spawn(serve(listener, app, handshake, stopping, grace));
        Ok(HttpServer { stop, task })
    }

    /// Resolves if the server ends on its own (it does not, short of a bug).
    pub(crate) async fn ended(&mut self) -> io::Result<Drained> {
        (&mut self.task).await.map_err(io::Error::other)?
    }

    /// Stops accepting, lets the requests in flight finish within the grace (idle
    /// keep-alive connections are closed at once), and drops what is left.
    pub(crate) async fn stop(self) -> io::Result<Drained> {
        let _ = self.stop.send(true);
        self.task.await.map_err(io::Error::other)?
    }

    /// Stops at once, dropping every connection.
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

async fn serve<T, B, H>(
    listener: TcpListener,
    app: impl FnOnce() -> actix_web::App<T>,
    handshake: H,
    mut stopping: watch::Receiver<bool>,
    grace: Duration,
) -> io::Result<Drained>
where
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
    H: Handshake,
{
    // The app (routes, middleware, state) is built once and shared by every connection;
    // only actix-http's service around it comes and goes with the connections.
    let app = Rc::new(
        app()
            .into_factory()
            .new_service(AppConfig::default())
            .await
            .map_err(|()| io::Error::other("the HTTP service could not be built"))?,
    );
    let closing = stopping.clone();
    let mut serving = Serving::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, _)) => {
                    // Cannot fail (the expect handler and the shared app are there
                    // already); if it did, the server would end with that error.
                    let service = serving
                        .for_connection(|| connection_service(Rc::clone(&app), closing.clone()))
                        .await?;
                    // The peer address is not used: no getpeername per connection.
                    let handshake = handshake.clone();
                    connections.spawn_local(async move {
                        match handshake.handshake(stream).await {
                            Ok(stream) => {
                                let _ = service.call((stream, Protocol::Http1, None)).await;
                            }
                            Err(error) => tracing::debug!(%error, "handshake failed"),
                        }
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

/// actix-http's HTTP/1 service for the connections open now, or none while none are.
///
/// Every actix-http service config owns a `DateService`: a task that wakes every 500 ms for
/// as long as the config lives, to refresh the cached `Date` header and the clock its
/// connection deadlines are counted from (actix-http 3.20, `date.rs`, `config.rs`). A
/// config built once for the whole run woke an idle gateway twice a second, ten times what
/// kubelet's probes cost. So the service (and its config) is built when a connection comes
/// and none is open, shared by the connections that come while it lives, and dropped with
/// the last of them: nothing then wakes the gateway until the next connection.
pub(super) struct Serving<H> {
    /// Each connection's task holds the service; this only finds it while one does.
    current: Weak<H>,
}

impl<H> Default for Serving<H> {
    fn default() -> Self {
        Serving {
            current: Weak::new(),
        }
    }
}

impl<H> Serving<H> {
    /// The service for a new connection: the one the open connections use, or a new one
    /// from `build` when none is open.
    pub(super) async fn for_connection<F>(&mut self, build: impl FnOnce() -> F) -> io::Result<Rc<H>>
    where
        F: Future<Output = io::Result<H>>,
    {
        if let Some(service) = self.current.upgrade() {
            return Ok(service);
        }
        let service = Rc::new(build().await?);
        self.current = Rc::downgrade(&service);
        Ok(service)
    }

    /// True while some connection holds the service (and its date timer runs).
    #[cfg(test)]
    pub(super) fn is_serving(&self) -> bool {
        self.current.strong_count() > 0
    }
}

/// actix-http's HTTP/1 service over `app`, with actix-web's timeouts, for one burst of
/// connections (see [`Serving`]). Building it costs a few allocations and the date task's
/// spawn; the app itself is not rebuilt.
pub(super) async fn connection_service<T, S, B>(
    app: Rc<S>,
    stopping: watch::Receiver<bool>,
) -> io::Result<impl Service<(T, Protocol, Option<SocketAddr>), Response = (), Error = DispatchError>>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    HttpService::build()
        .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        // Doc-hidden in actix-http (public for actix-web's own server, which uses it the
        // same way; the behaviour is from 3.13.3): once signalled, each connection closes when its current
        // request is answered, an idle keep-alive one at once. Without it the drain in
        // `serve` would wait up to the keep-alive timeout for idle connections, and keep
        // serving busy keep-alive clients after SIGTERM. Being hidden, it may change in a
        // minor release: Cargo.toml pins the version it was read in, and
        // `an_idle_keep_alive_connection_does_not_hold_up_shutdown` (tests/api/lifecycle.rs)
        // is the test that fails if it stops working.
        .graceful_shutdown_signal(move || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            }
        })
        .finish(fn_factory(move || {
            let app = Rc::clone(&app);
            async move { Ok::<_, ()>(app) }
        }))
        .new_service(())
        .await
        .map_err(|()| io::Error::other("the HTTP service could not be built"))
}

/// The listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {address}: {source}")]
pub(crate) struct BindError {
    pub address: std::net::SocketAddr,
    pub source: io::Error,
}

/// Binds `address`; the IPv6 wildcard falls back to `0.0.0.0` on hosts without IPv6.
pub(crate) fn bind(address: std::net::SocketAddr) -> Result<std::net::TcpListener, BindError> {
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
