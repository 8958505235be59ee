//! The HTTP API.
//!
//! | route | methods | what |
//! |---|---|---|
//! | `/ready` | GET, HEAD | runs the readiness checks together: 200 `ok`, 503 reason, 404 if not configured; 503 while hook mode waits for the VM definition; `?exclude=NAME` leaves a check out |
//! | `/live` | GET, HEAD | runs the liveness checks, likewise |
//! | `/ready/{check}`, `/live/{check}` | GET, HEAD | runs one of the probe's checks; 404 for a name it does not have |
//! | `/started` | GET, HEAD | the startup probe's state: 200 once started, 503 before or when it did not start; runs nothing |
//! | `/healthz` | GET, HEAD | 200 while the gateway serves; never touches the agent |
//! | `/metrics` | GET, HEAD | Prometheus metrics ([`crate::metrics`]) |
//! | `/openapi.json` | GET | the OpenAPI document ([`openapi`]) |
//! | `/docs/` | GET | Swagger UI for that document (assets built in: works offline); `/docs` is a 308 to it |
//!
//! `?verbose` gives the text report, `Accept: application/json` the JSON report
//! ([`render`]). Any other method is 405 with `Allow`; any other path 404, never a
//! redirect. The one 3xx is `/docs` to `/docs/` (308): the page's assets are relative to
//! the slash.

#[cfg(feature = "swagger-ui")]
mod docs;
mod error;
pub(crate) mod negotiate;
pub(crate) mod openapi;
pub(crate) mod render;
mod routes;
pub(crate) mod server;
#[cfg(test)]
mod tests;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, web};

pub(crate) use routes::{AppState, count_requests, not_found};
pub(crate) use server::{Drained, HttpServer};

/// The gateway's app: the routes, the request counter, `state`. The server and the
/// in-process route tests build this same app.
pub(crate) fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap(actix_web::middleware::from_fn(count_requests))
        .configure(configure)
}

/// Registers the routes on an actix-web app.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(get_and_head("/ready", routes::ready))
        .service(get_and_head("/live", routes::live))
        .service(get_and_head("/ready/{check}", routes::ready_check))
        .service(get_and_head("/live/{check}", routes::live_check))
        .service(get_and_head("/started", routes::started))
        .service(get_and_head("/metrics", routes::metrics))
        .service(
            web::resource("/openapi.json")
                .route(web::get().to(routes::openapi_json))
                .default_service(web::to(routes::method_not_allowed_get)),
        )
        .service(get_and_head("/healthz", routes::healthz))
        .default_service(web::to(routes::not_found));
    #[cfg(feature = "swagger-ui")]
    config
        .service(web::resource("/docs").route(web::get().to(docs::redirect)))
        .service(web::resource("/docs/{file:.*}").route(web::get().to(docs::file)));
}

/// `path` served by `handler` for GET and HEAD (actix drops HEAD's body), 405 otherwise.
pub(crate) fn get_and_head<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(routes::method_not_allowed))
}
