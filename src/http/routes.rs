//! Request handlers. Only the configured probes run: nothing in a request (path, query,
//! headers, body) reaches the guest.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::error::{ApiError, ApiErrorResponse, ErrorBody};
use super::negotiate::{Format, verbose_flag, wants_json};
use super::render::{self, Exposure, JsonReport, ProbeUnavailable};
use crate::config::ProbeKind;
use crate::metrics::Metrics;
use crate::probe::{CheckResult, InForce, ProbeReport, ProbeRunner};

/// What every handler shares.
pub(crate) struct AppState {
    pub in_force: Arc<InForce>,
    pub metrics: Arc<Metrics>,
}

/// Past the probe's timeout, the agent task has already answered; this margin only guards
/// the promise that a response comes within `timeoutSeconds` + 0.5 s whatever happens.
const RESPONSE_MARGIN: Duration = Duration::from_millis(400);

/// A probe route: the same contract for `/ready` and `/live`, one handler each (the
/// OpenAPI document describes each path; only the summary and description differ).
macro_rules! probe_route {
    ($name:ident, $path:literal, $kind:expr, $summary:literal, $description:literal) => {
        #[utoipa::path(
            get,
            path = $path,
            tag = "probes",
            summary = $summary,
            description = $description,
            params(("verbose" = Option<String>, Query, pattern = "^(true|false|1|0)?$", description = "A human-readable text report: `?verbose` (no value), `true` or `1`; `false` or `0` turns it off.")),
            responses(
                (status = 200, description = "The check passed.", content(
                    (String = "text/plain", example = "ok"),
                    (JsonReport = "application/json"),
                )),
                (status = 503, description = "The check failed; the text body is the one-line reason. In KubeVirt hook mode, also while the gateway waits for the VM definition (then the JSON body is an error body).", content(
                    (String = "text/plain", example = "exec: exit code 1"),
                    (ProbeUnavailable = "application/json"),
                )),
                (status = 400, description = "An unknown query parameter or a bad verbose value.", content(
                    (String = "text/plain"),
                    (ErrorBody = "application/json"),
                )),
                (status = 404, description = "This probe is not configured.", content(
                    (String = "text/plain"),
                    (ErrorBody = "application/json"),
                )),
            )
        )]
        pub(super) async fn $name(
            request: HttpRequest,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, ApiErrorResponse> {
            probe($kind, &request, &state).await
        }
    };
}

probe_route!(
    ready,
    "/ready",
    ProbeKind::Readiness,
    "Run the readiness check",
    "Runs the configured readiness check (exec or guestAgentPing) through the guest agent. Send `Accept: application/json` for the JSON report. Only configured commands run in the guest: nothing in the request becomes one. The answer comes within the probe's timeoutSeconds + 0.5 s. HEAD is served too, with the same status and no body."
);

probe_route!(
    live,
    "/live",
    ProbeKind::Liveness,
    "Run the liveness check",
    "Runs the configured liveness check. Until the agent has answered once, a failure to reach it passes within livenessGraceSeconds, with a note in reason. Send `Accept: application/json` for the JSON report. Only configured commands run in the guest: nothing in the request becomes one. The answer comes within the probe's timeoutSeconds + 0.5 s. HEAD is served too, with the same status and no body."
);

async fn probe(
    kind: ProbeKind,
    request: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiErrorResponse> {
    let json = accepts_json(request);
    let fail = |error| ApiErrorResponse { error, json };
    let verbose = verbose_flag(request.query_string()).map_err(|e| fail(ApiError::BadQuery(e)))?;
    let set = state
        .in_force
        .current()
        .map_err(|reason| fail(ApiError::Waiting(reason)))?;
    let runner = set
        .runner(kind)
        .ok_or_else(|| fail(ApiError::NotConfigured(kind)))?;
    let report = match set.background_report(kind) {
        Some(report) => report,
        None => run_bounded(runner).await,
    };
    let exposure = Exposure {
        output: set.settings.expose_output,
    };
    let format = match (json, verbose) {
        (true, _) => Format::Json,
        (false, true) => Format::Verbose,
        (false, false) => Format::Plain,
    };
    Ok(respond(&report, format, exposure))
}

async fn run_bounded(runner: &Arc<ProbeRunner>) -> Arc<ProbeReport> {
    let started = tokio::time::Instant::now();
    let checked_at = SystemTime::now();
    match tokio::time::timeout(runner.timeout() + RESPONSE_MARGIN, runner.check()).await {
        Ok(report) => report,
        Err(_) => {
            tracing::warn!(probe = %runner.kind(), "check overran its timeout; answering without it");
            Arc::new(ProbeReport {
                probe: runner.kind(),
                handler: runner.handler(),
                result: CheckResult::Timeout,
                reason: Some(format!("timed out after {}s", runner.timeout().as_secs())),
                duration: started.elapsed(),
                checked_at,
                exec: None,
                background: None,
                reused_age: None,
            })
        }
    }
}

fn respond(report: &ProbeReport, format: Format, exposure: Exposure) -> HttpResponse {
    let mut response = if report.passed() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    match format {
        Format::Plain => response
            .content_type("text/plain; charset=utf-8")
            .body(render::plain(report)),
        Format::Verbose => response
            .content_type("text/plain; charset=utf-8")
            .body(render::verbose(report, exposure)),
        Format::Json => response
            .content_type("application/json")
            .body(render::json(report, exposure)),
    }
}

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Metrics in the OpenMetrics text format.",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)),
)]
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(state.metrics.encode())
}

/// `GET /openapi.json`: this API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "The OpenAPI document",
    responses((status = 200, description = "The OpenAPI document of this API.", content_type = "application/json", body = Object)),
)]
pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document())
}

/// Counts every response by route and status (the `http_requests_total` metric) and logs
/// it at debug level.
pub(crate) async fn count_requests(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = request
        .app_data::<web::Data<AppState>>()
        .map(|s| Arc::clone(&s.metrics));
    let path = request.path().to_string();
    let response = next.call(request).await?;
    let status = response.status().as_u16();
    if let Some(metrics) = metrics {
        metrics.record_http(&path, status);
    }
    // The access log: at debug, since kubelet probes every few seconds (RUST_LOG=debug).
    tracing::debug!(method = %response.request().method(), %path, status, "request");
    Ok(response)
}

/// `GET /healthz`: the gateway serves. Never touches the agent.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Is the gateway serving",
    description = "200 while the gateway serves. Never touches the agent.",
    responses((status = 200, description = "The gateway serves.", content_type = "text/plain", body = String, example = "ok")),
)]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body("ok\n")
}

pub(super) async fn method_not_allowed(request: HttpRequest) -> HttpResponse {
    ApiErrorResponse {
        error: ApiError::MethodNotAllowed { allow: "GET, HEAD" },
        json: accepts_json(&request),
    }
    .error_response()
}

pub(super) async fn method_not_allowed_get(request: HttpRequest) -> HttpResponse {
    ApiErrorResponse {
        error: ApiError::MethodNotAllowed { allow: "GET" },
        json: accepts_json(&request),
    }
    .error_response()
}

pub(crate) async fn not_found(request: HttpRequest) -> HttpResponse {
    ApiErrorResponse {
        error: ApiError::NotFound,
        json: accepts_json(&request),
    }
    .error_response()
}

fn accepts_json(request: &HttpRequest) -> bool {
    wants_json(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
}
