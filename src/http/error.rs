//! The one place where request errors become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::config::ProbeKind;

/// A request the gateway will not serve, and why. The message is for the client: it
/// names what is wrong and never carries internals.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0} probe is not configured")]
    NotConfigured(ProbeKind),
    /// `/ready/<name>` or `/live/<name>` with a name the probe does not have.
    #[error("the {kind} probe has no check named {name:?} (its checks: {known})")]
    NoSuchCheck {
        kind: ProbeKind,
        name: String,
        known: String,
    },
    #[error(
        "not found: the gateway serves /ready, /live, /ready/<check>, /live/<check>, /started, \
         /healthz and /metrics"
    )]
    NotFound,
    #[error("method not allowed: use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("bad request: {0}")]
    BadQuery(String),
    /// No checks are in force yet (KubeVirt hook mode before the VM is defined).
    #[error("{0}")]
    Waiting(&'static str),
}

/// The JSON body of an error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What is wrong, for people.
    #[schema(example = "readiness probe is not configured")]
    pub error: String,
}

/// An [`ApiError`] rendered in the form the client accepts.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub(crate) struct ApiErrorResponse {
    pub error: ApiError,
    pub json: bool,
}

impl ResponseError for ApiErrorResponse {
    fn status_code(&self) -> StatusCode {
        match self.error {
            ApiError::NotConfigured(_) | ApiError::NoSuchCheck { .. } | ApiError::NotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::Waiting(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let ApiError::MethodNotAllowed { allow } = self.error {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        let message = self.error.to_string();
        if self.json {
            response
                .content_type("application/json")
                .body(serde_json::to_string(&ErrorBody { error: message }).unwrap_or_default())
        } else {
            response
                .content_type("text/plain; charset=utf-8")
                .body(format!("{message}\n"))
        }
    }
}
