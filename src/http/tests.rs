//! The HTTP API's route semantics, in process: the gateway's own app ([`super::app`]: the
//! routes, the request counter, the state) without a socket or an agent. Most requests go
//! through actix-web's test service; what only actix-http's HTTP/1 dispatcher does (a HEAD
//! answered without its body) goes through the server's own connection service over an
//! in-memory stream. Reports of real checks and malformed HTTP on real TCP are tested
//! against a real qemu-ga in `tests/api/http_api.rs`.

use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use actix_http::{Protocol, Request};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::test::{self, TestRequest};
use actix_web::web;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::AppState;
use super::server::{Serving, connection_service};
use crate::config::{AgentSetting, Overrides, Settings, parse_document};
use crate::kubevirt::WAITING_FOR_DEFINITION;
use crate::metrics::Metrics;
use crate::probe::InForce;

const PING_BOTH: &str =
    "readinessProbe:\n  guestAgentPing: {}\nlivenessProbe:\n  guestAgentPing: {}\n";
const LIVENESS_ONLY: &str = "livenessProbe:\n  guestAgentPing: {}\n";

/// Runs `test` in an actix system, as the gateway runs (actix-http spawns local tasks).
fn in_system<F: Future>(test: F) -> F::Output {
    actix_web::rt::System::new().block_on(test)
}

/// The state of a gateway with `config`'s checks in force and its agent at a socket in
/// `dir` that nobody listens on: no request here may need the agent to answer.
fn configured(config: &str, dir: &Path) -> web::Data<AppState> {
    let file = parse_document(config).expect("a valid config");
    let agent = AgentSetting::parse(&format!("unix://{}", dir.join("absent.sock").display()))
        .expect("an agent address");
    let overrides = Overrides {
        agent: Some(agent),
        ..Overrides::default()
    };
    let settings = Settings::resolve(file, &overrides).expect("settings");
    let metrics = Arc::new(Metrics::new());
    let checks = InForce::new(WAITING_FOR_DEFINITION, crate::probe::never_paused());
    checks.put(settings.checks, &metrics);
    state(checks, metrics)
}

/// The gateway's app with `config`'s checks in force (see [`configured`]), and the temp
/// dir of its agent's socket.
async fn configured_app(
    config: &str,
) -> (
    tempfile::TempDir,
    impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = test::init_service(super::app(configured(config, dir.path()))).await;
    (dir, app)
}

/// The state of a KubeVirt hook sidecar before `OnDefineDomain`: no checks in force.
fn waiting_for_the_definition() -> web::Data<AppState> {
    state(
        InForce::new(WAITING_FOR_DEFINITION, crate::probe::never_paused()),
        Arc::new(Metrics::new()),
    )
}

fn state(in_force: InForce, metrics: Arc<Metrics>) -> web::Data<AppState> {
    web::Data::new(AppState {
        in_force: Arc::new(in_force),
        metrics,
    })
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    allow: Option<String>,
    location: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` (with `Accept: accept` if given) to the in-process `app`.
async fn send<S, B>(app: &S, method: Method, path: &str, accept: Option<&str>) -> Reply
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut request = TestRequest::default().method(method).uri(path);
    if let Some(accept) = accept {
        request = request.insert_header((header::ACCEPT, accept));
    }
    let response = test::call_service(app, request.to_request()).await;
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("a text header").to_string())
    };
    let (status, content_type) = (response.status().as_u16(), header(header::CONTENT_TYPE));
    let (allow, location) = (header(header::ALLOW), header(header::LOCATION));
    let body = test::read_body(response).await;
    Reply {
        status,
        content_type,
        allow,
        location,
        body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
    }
}

async fn get<S, B>(app: &S, path: &str) -> Reply
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    send(app, Method::GET, path, None).await
}

#[test]
fn unknown_paths_are_404_and_never_redirected() {
    in_system(async {
        let (_dir, app) = configured_app(PING_BOTH).await;
        for path in [
            "/",
            "/ready/",
            "/readyz",
            "/live/x",
            "/%2e%2e/etc/passwd",
            "/docs/x/",
        ] {
            let reply = get(&app, path).await;
            assert_eq!(reply.status, 404, "{path}");
            assert_eq!(reply.location, None, "{path}");
        }
        let reply = get(&app, "/nope").await;
        assert_eq!(
            reply.body,
            "not found: the gateway serves /ready, /live, /ready/<check>, /live/<check>, /started, /healthz and /metrics\n"
        );
    });
}

#[test]
fn other_methods_get_405_with_an_allow_header() {
    in_system(async {
        let (_dir, app) = configured_app(PING_BOTH).await;
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            for path in ["/ready", "/live", "/healthz", "/metrics"] {
                let reply = send(&app, method.clone(), path, None).await;
                assert_eq!(reply.status, 405, "{method} {path}");
                assert_eq!(reply.allow.as_deref(), Some("GET, HEAD"), "{method} {path}");
                assert_eq!(reply.body, "method not allowed: use GET, HEAD\n");
            }
        }
        // The document is GET only: HEAD too is refused.
        for method in [Method::POST, Method::HEAD] {
            let reply = send(&app, method.clone(), "/openapi.json", None).await;
            assert_eq!(reply.status, 405, "{method}");
            assert_eq!(reply.allow.as_deref(), Some("GET"), "{method}");
            assert_eq!(reply.body, "method not allowed: use GET\n");
        }
    });
}

#[test]
fn bad_query_parameters_are_400_naming_the_parameter() {
    in_system(async {
        let (_dir, app) = configured_app(PING_BOTH).await;
        let reply = get(&app, "/ready?verbose=perhaps").await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.body,
            "bad request: query parameter verbose: \"perhaps\" is not one of true, false, 1, 0 (or no value)\n"
        );
        let reply = get(&app, "/live?command=reboot").await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.body,
            "bad request: unknown query parameter \"command\": the parameters are verbose and exclude\n"
        );
    });
}

#[test]
fn an_unconfigured_probe_is_404_saying_so() {
    in_system(async {
        let (_dir, app) = configured_app(LIVENESS_ONLY).await;
        let reply = get(&app, "/ready").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, "readiness probe is not configured\n")
        );
        let reply = send(&app, Method::GET, "/ready", Some("application/json")).await;
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": "readiness probe is not configured"})
        );
    });
}

#[test]
fn hook_mode_answers_503_waiting_for_the_vm_definition() {
    in_system(async {
        let app = test::init_service(super::app(waiting_for_the_definition())).await;
        for path in ["/ready", "/live", "/ready?verbose"] {
            let reply = get(&app, path).await;
            assert_eq!(reply.status, 503, "{path}");
            assert_eq!(reply.body, format!("{WAITING_FOR_DEFINITION}\n"), "{path}");
            let reply = send(&app, Method::GET, path, Some("application/json")).await;
            assert_eq!(reply.status, 503, "{path}");
            assert_eq!(
                reply.json(),
                serde_json::json!({"error": WAITING_FOR_DEFINITION}),
                "{path}"
            );
        }
        // The gateway itself serves meanwhile.
        assert_eq!(get(&app, "/healthz").await.status, 200);
    });
}

#[test]
fn errors_are_json_when_json_is_accepted_and_text_otherwise() {
    in_system(async {
        let (_dir, app) = configured_app(LIVENESS_ONLY).await;
        let cases = [
            (Method::GET, "/nope", 404, "not found"),
            (
                Method::GET,
                "/ready",
                404,
                "readiness probe is not configured",
            ),
            (
                Method::POST,
                "/live",
                405,
                "method not allowed: use GET, HEAD",
            ),
            (
                Method::GET,
                "/live?x",
                400,
                "bad request: unknown query parameter",
            ),
        ];
        for (method, path, status, message) in cases {
            let json = send(&app, method.clone(), path, Some("application/json")).await;
            assert_eq!(json.status, status, "{method} {path}");
            assert_eq!(json.content_type.as_deref(), Some("application/json"));
            let error = json.json()["error"].as_str().map(str::to_string);
            assert!(
                error.as_deref().is_some_and(|e| e.starts_with(message)),
                "{method} {path}: {}",
                json.body
            );
            // kubelet's and curl's Accept get the same message as text.
            let text = send(&app, method.clone(), path, Some("*/*")).await;
            assert_eq!(text.status, status, "{method} {path}");
            assert_eq!(
                text.content_type.as_deref(),
                Some("text/plain; charset=utf-8")
            );
            assert_eq!(Some(text.body.trim_end().to_string()), error);
        }
    });
}

#[test]
fn healthz_answers_without_an_agent() {
    in_system(async {
        let (_dir, app) = configured_app(PING_BOTH).await;
        let reply = get(&app, "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
        assert_eq!(
            reply.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
    });
}

#[test]
fn metrics_count_requests_by_path_and_status() {
    in_system(async {
        let (_dir, app) = configured_app(LIVENESS_ONLY).await;
        for _ in 0..2 {
            assert_eq!(get(&app, "/healthz").await.status, 200);
        }
        assert_eq!(get(&app, "/ready").await.status, 404);
        assert_eq!(get(&app, "/no/such/thing").await.status, 404);
        assert_eq!(send(&app, Method::POST, "/live", None).await.status, 405);
        let reply = get(&app, "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let text = reply.body;
        for line in [
            "probe_gateway_http_requests_total{path=\"/healthz\",status=\"200\"} 2",
            "probe_gateway_http_requests_total{path=\"/ready\",status=\"404\"} 1",
            "probe_gateway_http_requests_total{path=\"/live\",status=\"405\"} 1",
            "probe_gateway_http_requests_total{path=\"other\",status=\"404\"} 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // A request's own path never becomes a label.
        assert!(!text.contains("/no/such/thing"), "{text}");
    });
}

#[test]
fn the_openapi_document_is_served() {
    in_system(async {
        let app = test::init_service(super::app(waiting_for_the_definition())).await;
        let reply = get(&app, "/openapi.json").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        assert_eq!(reply.body, super::openapi::document());
    });
}

#[cfg(feature = "swagger-ui")]
#[test]
fn docs_is_a_308_to_docs_slash_where_the_page_is() {
    in_system(async {
        let app = test::init_service(super::app(waiting_for_the_definition())).await;
        // The test service follows nothing: this is the answer itself.
        let reply = get(&app, "/docs").await;
        assert_eq!(reply.status, 308);
        assert_eq!(reply.location.as_deref(), Some("/docs/"));
        let page = get(&app, "/docs/").await;
        assert_eq!(page.status, 200);
        assert_eq!(
            page.content_type.as_deref(),
            Some("text/html; charset=utf-8")
        );
    });
}

/// The gateway's app behind the server's own HTTP/1 connection service: `requests` (each
/// a full request head) are written on one in-memory connection, which is then closed;
/// returns what the server wrote back, and whether a service was still alive after the
/// connection ended.
async fn over_a_connection(state: web::Data<AppState>, requests: &[&str]) -> (String, bool) {
    let app = Rc::new(
        super::app(state)
            .into_factory()
            .new_service(AppConfig::default())
            .await
            .expect("the app"),
    );
    let (_stop, stopping) = watch::channel(false);
    let mut serving = Serving::default();
    let service = serving
        .for_connection(|| connection_service(Rc::clone(&app), stopping))
        .await
        .expect("the HTTP service");
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let connection =
        actix_web::rt::spawn(async move { service.call((server, Protocol::Http1, None)).await });
    assert!(
        serving.is_serving(),
        "no service while a connection is open"
    );
    for request in requests {
        client.write_all(request.as_bytes()).await.expect("write");
    }
    client.shutdown().await.expect("shutdown");
    let mut response = String::new();
    client
        .read_to_string(&mut response)
        .await
        .expect("a response");
    connection
        .await
        .expect("the connection task")
        .expect("served");
    (response, serving.is_serving())
}

#[test]
fn head_answers_with_the_status_of_get_and_no_body() {
    in_system(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            (configured(LIVENESS_ONLY, dir.path()), "/healthz", "200 OK"),
            (
                configured(LIVENESS_ONLY, dir.path()),
                "/ready",
                "404 Not Found",
            ),
            (
                waiting_for_the_definition(),
                "/live",
                "503 Service Unavailable",
            ),
        ];
        for (state, path, status) in cases {
            let head = format!("HEAD {path} HTTP/1.1\r\nhost: gateway\r\n\r\n");
            let get = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\n\r\n");
            let (response, _) = over_a_connection(state, &[&head, &get]).await;
            // Two answers on the keep-alive connection: HEAD's head alone, then GET's with
            // its body.
            let answers: Vec<_> = response.split("HTTP/1.1 ").skip(1).collect();
            assert_eq!(answers.len(), 2, "{path}: {response}");
            assert!(answers[0].starts_with(status), "{path}: {response}");
            assert!(
                answers[0].ends_with("\r\n\r\n"),
                "HEAD {path} has a body: {response}"
            );
            assert!(answers[1].starts_with(status), "{path}: {response}");
            assert!(
                !answers[1].ends_with("\r\n\r\n"),
                "GET {path} has none: {response}"
            );
        }
    });
}

#[test]
fn the_http_service_and_its_date_timer_live_only_while_a_connection_is_open() {
    in_system(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let request = "GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n";
        let (response, serving_after) =
            over_a_connection(configured(PING_BOTH, dir.path()), &[request]).await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        // Nothing holds actix-http's service config once its connections are gone: its
        // date task, which ticks every 500 ms while the config lives, is stopped.
        assert!(!serving_after, "the HTTP service outlived its connection");
    });
}

#[test]
fn connections_open_at_once_share_one_http_service_and_a_later_one_gets_a_new_one() {
    in_system(async {
        let mut serving = Serving::default();
        let mut built = 0;
        let mut build = || {
            built += 1;
            std::future::ready(Ok(built))
        };
        let first = serving.for_connection(&mut build).await.expect("built");
        let second = serving.for_connection(&mut build).await.expect("shared");
        assert!(Rc::ptr_eq(&first, &second));
        drop((first, second));
        assert!(!serving.is_serving());
        let third = serving.for_connection(&mut build).await.expect("built");
        assert_eq!((*third, built), (2, 2));
    });
}
