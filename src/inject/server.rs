//! The webhook's servers, on the one thread the process runs:
//!
//! | port | route | methods | what |
//! |---|---|---|---|
//! | `--listen` (HTTPS) | `/mutate` | POST | an `admission.k8s.io/v1` AdmissionReview in, its answer out; 400 naming what is wrong if the body is not one; 413 over [`MAX_REVIEW_BYTES`] |
//! | | `/mutate/plugin` | POST | the same, the plugin road the namespace's default |
//! | `--metrics-listen` (HTTP) | `/healthz` | GET, HEAD | 200 while the webhook serves |
//! | | `/metrics` | GET, HEAD | Prometheus metrics ([`super::metrics`]) |
//!
//! Any other path is 404, any other method 405. The certificate is read again when its
//! files change ([`super::tls`]). SIGTERM or SIGINT: both servers stop accepting, answer
//! what is in flight within the grace, and the process exits 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpResponse, web};
use tokio_rustls::TlsAcceptor;

use super::admission::{self, Outcome};
use super::decision::Road;
use super::metrics::InjectMetrics;
use super::tls::{ReloadingCertificate, TlsError};
use crate::config::InjectSettings;
use crate::http::server::{BindError, Handshake, PlainTcp, bind};
use crate::http::{Drained, HttpServer, get_and_head, not_found};
use crate::reload::ConfigWatch;

/// The largest review body read: an object is at most 1.5 MiB in etcd, and a review of an
/// UPDATE holds the object twice. A larger body is refused with 413 unread.
pub(crate) const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// A client that connects and sends no TLS handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routes share.
pub(crate) struct InjectState {
    pub settings: InjectSettings,
    pub metrics: Arc<InjectMetrics>,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InjectError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot serve: {0}")]
    Serve(#[from] std::io::Error),
}

/// Where the webhook serves.
pub(crate) struct Listen {
    pub webhook: SocketAddr,
    pub metrics: SocketAddr,
    pub shutdown_grace: Duration,
}

/// TLS over the accepted connection, bounded by [`HANDSHAKE_TIMEOUT`].
#[derive(Clone)]
struct Tls(TlsAcceptor);

impl Handshake for Tls {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;

    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = std::io::Result<Self::Stream>> + 'static {
        let accept = self.0.accept(tcp);
        async move {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, accept)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS handshake")
                })?
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub(crate) async fn run(
    settings: InjectSettings,
    listen: Listen,
    certificate: Arc<ReloadingCertificate>,
) -> Result<(), InjectError> {
    let metrics = Arc::new(InjectMetrics::new());
    let state = web::Data::new(InjectState {
        settings,
        metrics: Arc::clone(&metrics),
    });
    let webhook_listener = bind(listen.webhook)?;
    let metrics_listener = bind(listen.metrics)?;
    let (webhook_address, metrics_address) = (
        webhook_listener.local_addr()?,
        metrics_listener.local_addr()?,
    );
    let tls = Tls(TlsAcceptor::from(Arc::new(certificate.server_config()?)));
    let webhook_state = state.clone();
    let webhook = HttpServer::serve(
        webhook_listener,
        move || webhook_app(webhook_state),
        tls,
        listen.shutdown_grace,
    )?;
    let operations = HttpServer::serve(
        metrics_listener,
        move || operations_app(state),
        PlainTcp,
        listen.shutdown_grace,
    )?;
    tracing::info!(
        address = %webhook_address,
        metrics_address = %metrics_address,
        cert = %certificate.files().cert.display(),
        "listening"
    );
    let watching = watch_certificate(Arc::clone(&certificate), Arc::clone(&metrics));
    let reason = tokio::select! {
        signal = crate::app::stop_signal() => signal?,
        () = watching => "the certificate watch ended",
    };
    tracing::info!(reason, "shutting down: draining in-flight reviews");
    for (name, server) in [("webhook", webhook), ("metrics", operations)] {
        match server.stop().await {
            Ok(Drained::Done) => {}
            Ok(Drained::GraceElapsed { dropped }) => tracing::warn!(
                server = name,
                connections = dropped,
                "shutdown grace elapsed with requests still in flight; they were dropped"
            ),
            Err(error) => {
                tracing::error!(server = name, %error, "the server failed while draining")
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Reads the certificate again whenever its files' directories change (a Secret volume
/// is updated by a symlink swap, which a watch on the files themselves would not see).
/// Returns only if no watch could be started (then the certificate is never reloaded:
/// logged, and the process keeps serving until stopped).
async fn watch_certificate(certificate: Arc<ReloadingCertificate>, metrics: Arc<InjectMetrics>) {
    let files = certificate.files().clone();
    // One watch per directory: a Secret volume holds both files, and one swap of its
    // `..data` link is one reload.
    let watches: Vec<ConfigWatch> = if files.cert.parent() == files.key.parent() {
        vec![ConfigWatch::start_files(&[&files.cert, &files.key])]
    } else {
        vec![ConfigWatch::start(&files.cert), ConfigWatch::start(&files.key)]
    }
    .into_iter()
    .filter_map(|watch| {
        watch
            .map_err(|error| {
                tracing::warn!(%error, cert = %files.cert.display(), "cannot watch the certificate's files; a renewal needs a restart");
            })
            .ok()
    })
    .collect();
    let mut watches = watches.into_iter();
    let (mut first, mut second) = (watches.next(), watches.next());
    if first.is_none() {
        return std::future::pending().await;
    }
    loop {
        let changed = tokio::select! {
            changed = or_never(first.as_mut()) => changed,
            changed = or_never(second.as_mut()) => changed,
        };
        if changed.is_none() {
            return std::future::pending().await;
        }
        match certificate.reload() {
            Ok(()) => {
                metrics.record_certificate_reload(true);
                tracing::info!(cert = %files.cert.display(), "certificate reloaded");
            }
            Err(error) => {
                metrics.record_certificate_reload(false);
                tracing::warn!(%error, "the changed certificate cannot be read; the one in force stays");
            }
        }
    }
}

async fn or_never(watch: Option<&mut ConfigWatch>) -> Option<()> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

fn webhook_app(
    state: web::Data<InjectState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(web::PayloadConfig::new(MAX_REVIEW_BYTES))
        .service(
            web::resource("/mutate")
                .route(web::post().to(mutate_libvirt))
                .default_service(web::to(method_not_allowed_post)),
        )
        .service(
            web::resource("/mutate/plugin")
                .route(web::post().to(mutate_plugin))
                .default_service(web::to(method_not_allowed_post)),
        )
        .default_service(web::to(not_found))
}

fn operations_app(
    state: web::Data<InjectState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .service(get_and_head("/healthz", healthz))
        .service(get_and_head("/metrics", metrics))
        .default_service(web::to(not_found))
}

/// `POST /mutate`: VMs and VMIs of the namespace go the libvirt road unless they name one.
async fn mutate_libvirt(state: web::Data<InjectState>, body: web::Bytes) -> HttpResponse {
    mutate(&state, &body, Road::Libvirt)
}

/// `POST /mutate/plugin`: the plugin road, for namespaces labelled for it.
async fn mutate_plugin(state: web::Data<InjectState>, body: web::Bytes) -> HttpResponse {
    mutate(&state, &body, Road::Plugin)
}

fn mutate(state: &InjectState, body: &[u8], road: Road) -> HttpResponse {
    let started = Instant::now();
    match admission::review(body, &state.settings, road) {
        Ok((answer, handled)) => {
            let took = started.elapsed();
            state.metrics.record_review(
                handled.kind,
                handled.operation,
                handled.outcome.as_str(),
                took.as_secs_f64(),
            );
            macro_rules! event {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        kind = handled.kind,
                        operation = handled.operation,
                        object = %handled.object,
                        outcome = handled.outcome.as_str(),
                        detail = %handled.detail,
                        micros = took.as_micros() as u64,
                        "review"
                    )
                };
            }
            match handled.outcome {
                Outcome::Patched => event!(tracing::Level::INFO),
                Outcome::Skipped | Outcome::Malformed => event!(tracing::Level::WARN),
                Outcome::Unchanged => event!(tracing::Level::DEBUG),
            }
            HttpResponse::Ok()
                .content_type("application/json")
                .body(answer)
        }
        Err(bad) => {
            state.metrics.record_bad_review();
            tracing::warn!(error = %bad, bytes = body.len(), "not an AdmissionReview: answered 400");
            HttpResponse::BadRequest()
                .content_type("text/plain; charset=utf-8")
                .body(format!("{bad}\n"))
        }
    }
}

async fn method_not_allowed_post() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", "POST"))
        .content_type("text/plain; charset=utf-8")
        .body("method not allowed: /mutate takes POST\n")
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

async fn metrics(state: web::Data<InjectState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
