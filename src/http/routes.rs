//! Request handlers. Only the configured checks run: nothing in a request (path, query,
//! headers, body) reaches the guest; a check name in a path or query only selects among
//! the configured checks.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::error::{ApiError, ApiErrorResponse, ErrorBody};
use super::negotiate::{Format, QueryRule, probe_query, wants_json};
use super::render::{self, Exposure, JsonReport, ProbeUnavailable};
use crate::config::{CheckName, ProbeKind};
use crate::metrics::Metrics;
use crate::probe::{InForce, ProbeReport};

/// What every handler shares.
pub(crate) struct AppState {
    pub in_force: Arc<InForce>,
    pub metrics: Arc<Metrics>,
}

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
            params(
                ("verbose" = Option<String>, Query, pattern = "^(true|false|1|0)?$", description = "A human-readable text report: `?verbose` (no value), `true` or `1`; `false` or `0` turns it off."),
                ("exclude" = Option<Vec<CheckNameParam>>, Query, explode = true, description = "Leave this check out (repeatable: `?exclude=a&exclude=b`). A name the probe does not have is a 400 naming it."),
            ),
            responses(
                (status = 200, description = "Every check asked about passed (or the probe's state passes it: liveness while starting or paused).", content(
                    (String = "text/plain", example = "ok"),
                    (JsonReport = "application/json"),
                )),
                (status = 503, description = "A check failed, or the probe's state fails it (readiness while starting or paused, both probes after the startup probe failed); the text body is the one-line reason. In KubeVirt hook mode, also while the gateway waits for the VM definition (then the JSON body is an error body).", content(
                    (String = "text/plain", example = "app: exec: exit code 1"),
                    (ProbeUnavailable = "application/json"),
                )),
                (status = 400, description = "An unknown query parameter, a bad verbose value, or an excluded check the probe does not have.", content(
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
            probe($kind, None, &request, &state).await
        }
    };
}

/// A check's name in a query parameter, for the OpenAPI document only: a DNS label.
pub(crate) struct CheckNameParam;

/// Written out: utoipa's derive has no `pattern` for a newtype.
impl utoipa::PartialSchema for CheckNameParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(CHECK_NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(63))
            .examples(["app"])
            .into()
    }
}

impl utoipa::ToSchema for CheckNameParam {}

/// [`crate::config::CheckName`]'s rule as a regular expression.
const CHECK_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A one-check route: `/ready/{check}` and `/live/{check}`.
macro_rules! check_route {
    ($name:ident, $path:literal, $kind:expr, $example:literal, $summary:literal, $description:literal) => {
        #[utoipa::path(
            get,
            path = $path,
            tag = "probes",
            summary = $summary,
            description = $description,
            params(
                ("check" = String, Path, pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", example = $example, description = "The name of one of the probe's checks (for a probe written in KubeVirt's shape, the probe's own name: `readiness` or `liveness`)."),
                ("verbose" = Option<String>, Query, pattern = "^(true|false|1|0)?$", description = "A human-readable text report: `?verbose` (no value), `true` or `1`; `false` or `0` turns it off."),
            ),
            responses(
                (status = 200, description = "The check passed (or the probe's state passes it).", content(
                    (String = "text/plain", example = "ok"),
                    (JsonReport = "application/json"),
                )),
                (status = 503, description = "The check failed, or the probe's state fails it; the text body is the one-line reason. In KubeVirt hook mode, also while the gateway waits for the VM definition.", content(
                    (String = "text/plain", example = "app: exec: exit code 1"),
                    (ProbeUnavailable = "application/json"),
                )),
                (status = 400, description = "An unknown query parameter or a bad verbose value.", content(
                    (String = "text/plain"),
                    (ErrorBody = "application/json"),
                )),
                (status = 404, description = "This probe is not configured, or has no check of this name.", content(
                    (String = "text/plain"),
                    (ErrorBody = "application/json"),
                )),
            )
        )]
        pub(super) async fn $name(
            request: HttpRequest,
            path: web::Path<String>,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, ApiErrorResponse> {
            probe($kind, Some(path.as_str()), &request, &state).await
        }
    };
}

probe_route!(
    ready,
    "/ready",
    ProbeKind::Readiness,
    "Run the readiness checks",
    "Runs the readiness probe's checks (exec or guestAgentPing) through the guest agent, together; all must pass. Send `Accept: application/json` for the JSON report (one entry per check), `?verbose` for a `[+]name ok` line per check. Only configured commands run in the guest: nothing in the request becomes one. The answer comes within the longest check timeout + 0.5 s. While the startup probe has not passed, or an operator has paused the probes for maintenance, no check runs and readiness fails with that reason. HEAD is served too, with the same status and no body."
);

probe_route!(
    live,
    "/live",
    ProbeKind::Liveness,
    "Run the liveness checks",
    "Runs the liveness probe's checks, together; all must pass. Until the agent has answered once, a failure to reach it passes within livenessGraceSeconds, with a note in reason. While the startup probe has not passed, or an operator has paused the probes for maintenance, no check runs and liveness passes with that reason; once the startup probe has failed failureThreshold times, it fails. Send `Accept: application/json` for the JSON report. Only configured commands run in the guest: nothing in the request becomes one. The answer comes within the longest check timeout + 0.5 s. HEAD is served too, with the same status and no body."
);

check_route!(
    ready_check,
    "/ready/{check}",
    ProbeKind::Readiness,
    "readiness",
    "Run one readiness check",
    "Runs one of the readiness probe's checks, as `/ready` would. Only configured commands run in the guest: the name only selects among them. HEAD is served too."
);

check_route!(
    live_check,
    "/live/{check}",
    ProbeKind::Liveness,
    "liveness",
    "Run one liveness check",
    "Runs one of the liveness probe's checks, as `/live` would. Only configured commands run in the guest: the name only selects among them. HEAD is served too."
);

/// `GET /started`: the startup probe's state. Runs nothing.
#[utoipa::path(
    get,
    path = "/started",
    tag = "probes",
    summary = "Has the VM started",
    description = "200 once the startup probe has passed; 503 while it has not (`starting`) and after it failed failureThreshold times in a row (`didNotStart`). The gateway runs the startup probe itself: this only reads its state, with the latest checks, so a container startupProbe can point at it. HEAD is served too.",
    params(("verbose" = Option<String>, Query, pattern = "^(true|false|1|0)?$", description = "A human-readable text report.")),
    responses(
        (status = 200, description = "Started.", content(
            (String = "text/plain", example = "ok"),
            (JsonReport = "application/json"),
        )),
        (status = 503, description = "Not started (yet); the text body is the reason. In KubeVirt hook mode, also while the gateway waits for the VM definition.", content(
            (String = "text/plain", example = "starting: app: exec: exit code 1 (failure 2 of failureThreshold 30)"),
            (ProbeUnavailable = "application/json"),
        )),
        (status = 400, description = "An unknown query parameter or a bad verbose value.", content(
            (String = "text/plain"),
            (ErrorBody = "application/json"),
        )),
        (status = 404, description = "No startup probe is configured.", content(
            (String = "text/plain"),
            (ErrorBody = "application/json"),
        )),
    )
)]
pub(super) async fn started(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiErrorResponse> {
    let json = accepts_json(&request);
    let fail = |error| ApiErrorResponse { error, json };
    let query = probe_query(request.query_string(), QueryRule::VerboseOnly)
        .map_err(|e| fail(ApiError::BadQuery(e)))?;
    let set = state
        .in_force
        .current()
        .map_err(|reason| fail(ApiError::Waiting(reason)))?;
    let report = set
        .started_report()
        .ok_or_else(|| fail(ApiError::NotConfigured(ProbeKind::Startup)))?;
    let exposure = Exposure {
        output: set.settings.expose_output,
    };
    Ok(respond(&report, format(json, query.verbose), exposure))
}

async fn probe(
    kind: ProbeKind,
    check: Option<&str>,
    request: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, ApiErrorResponse> {
    let json = accepts_json(request);
    let fail = |error| ApiErrorResponse { error, json };
    let rule = match check {
        None => QueryRule::WholeProbe,
        Some(_) => QueryRule::VerboseOnly,
    };
    let query =
        probe_query(request.query_string(), rule).map_err(|e| fail(ApiError::BadQuery(e)))?;
    let set = state
        .in_force
        .current()
        .map_err(|reason| fail(ApiError::Waiting(reason)))?;
    let spec = set
        .settings
        .probe(kind)
        .ok_or_else(|| fail(ApiError::NotConfigured(kind)))?;
    let selected: Vec<CheckName> = match check {
        Some(name) => {
            let check = spec.check(name).ok_or_else(|| {
                fail(ApiError::NoSuchCheck {
                    kind,
                    name: printable(name),
                    known: spec.names(),
                })
            })?;
            vec![check.name.clone()]
        }
        None => {
            if let Some(unknown) = query.exclude.iter().find(|name| spec.check(name).is_none()) {
                return Err(fail(ApiError::BadQuery(format!(
                    "query parameter exclude: the {kind} probe has no check named {:?} (its checks: {})",
                    printable(unknown),
                    spec.names()
                ))));
            }
            spec.checks
                .iter()
                .filter(|check| {
                    !query
                        .exclude
                        .iter()
                        .any(|name| *name == check.name.as_str())
                })
                .map(|check| check.name.clone())
                .collect()
        }
    };
    let report = set.answer(kind, &selected).await;
    let exposure = Exposure {
        output: set.settings.expose_output,
    };
    Ok(respond(&report, format(json, query.verbose), exposure))
}

/// A name from a request, cut short and kept to printable characters for the error that
/// names it.
fn printable(name: &str) -> String {
    let mut shown: String = name.chars().take(64).filter(|c| !c.is_control()).collect();
    if name.chars().count() > 64 {
        shown.push('…');
    }
    shown
}

fn format(json: bool, verbose: bool) -> Format {
    match (json, verbose) {
        (true, _) => Format::Json,
        (false, true) => Format::Verbose,
        (false, false) => Format::Plain,
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
