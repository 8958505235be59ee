//! The HTTP contract where it needs a real agent or real TCP: reports of real checks,
//! malformed HTTP, the metrics of real checks, the Swagger UI's assets. Route semantics
//! (methods, paths, queries, errors, HEAD, hook mode's wait) are tested in process in
//! `src/http/tests.rs`.

use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;

const PING_BOTH: &str =
    "readinessProbe:\n  guestAgentPing: {}\nlivenessProbe:\n  guestAgentPing: {}\n";

#[tokio::test]
async fn verbose_gives_the_text_report() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(PING_BOTH, agent.socket());
    let reply = gateway.get("/live?verbose").await;
    assert_eq!(reply.status, 200);
    let lines: Vec<_> = reply.body.lines().collect();
    assert_eq!(lines[0], "[+]liveness ok");
    assert_eq!(lines[1], "    handler: guestAgentPing");
    assert_eq!(lines.last(), Some(&"liveness check passed"));
    assert!(lines.iter().any(|l| l.starts_with("    durationSeconds: ")));
}

#[tokio::test]
async fn json_is_served_when_accepted_with_or_without_verbose() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(PING_BOTH, agent.socket());
    for path in ["/live", "/live?verbose"] {
        let reply = gateway.request("GET", path, Some("application/json")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "application/json");
        let report = reply.json();
        assert_eq!(report["probe"], "liveness");
        assert_eq!(report["status"], "success");
        assert!(report["durationSeconds"].as_f64().unwrap() >= 0.0);
        assert!(humantime::parse_rfc3339(report["checkedAt"].as_str().unwrap()).is_ok());
    }
    // kubelet's Accept gets text.
    let reply = gateway.request("GET", "/live", Some("*/*")).await;
    assert_eq!(reply.body, "ok\n");
}

#[tokio::test]
async fn malformed_http_gets_a_400_and_the_gateway_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let agent = QemuGa::start();
    let gateway = Gateway::start(PING_BOTH, agent.socket());
    let mut stream = tokio::net::TcpStream::connect(gateway.address)
        .await
        .unwrap();
    stream
        .write_all(b"GARBAGE \x01\x02 HTTP/9\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(gateway.get("/live").await.status, 200);
}

#[tokio::test]
async fn metrics_count_checks_agent_commands_and_requests() {
    let agent = QemuGa::start();
    let config = "readinessProbe:\n  exec:\n    command: [\"false\"]\nlivenessProbe:\n  guestAgentPing: {}\n";
    let gateway = Gateway::start(config, agent.socket());
    for _ in 0..2 {
        assert_eq!(gateway.get("/live").await.status, 200);
        assert_eq!(gateway.get("/ready").await.status, 503);
    }
    assert_eq!(gateway.get("/no/such/thing").await.status, 404);
    let reply = gateway.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        reply.content_type
    );
    let text = reply.body;
    eprintln!("{text}");
    for line in [
        "probe_gateway_checks_total{probe=\"liveness\",check=\"liveness\",handler=\"guestAgentPing\",result=\"success\"} 2",
        "probe_gateway_checks_total{probe=\"readiness\",check=\"readiness\",handler=\"exec\",result=\"failure\"} 2",
        "probe_gateway_check_duration_seconds_count{probe=\"readiness\",check=\"readiness\",handler=\"exec\"} 2",
        "probe_gateway_agent_up 1",
        "probe_gateway_agent_commands_total{command=\"guest-ping\",outcome=\"ok\"} 2",
        "probe_gateway_agent_commands_total{command=\"guest-exec\",outcome=\"ok\"} 2",
        "probe_gateway_guest_processes_running 0",
        "probe_gateway_http_requests_total{path=\"/ready\",status=\"503\"} 2",
        "probe_gateway_http_requests_total{path=\"other\",status=\"404\"} 1",
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("probe_gateway_agent_resyncs_total 1"),
        "{text}"
    );
    assert!(!text.contains("/no/such/thing"));
}

#[cfg(feature = "swagger-ui")]
#[tokio::test]
async fn swagger_ui_is_served_offline_for_the_served_document() {
    let agent = QemuGa::not_started();
    let gateway = Gateway::start(PING_BOTH, agent.socket());
    let page = gateway.get("/docs/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("swagger-ui"), "{}", page.body);
    let initializer = gateway.get("/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status, 200);
    assert!(
        initializer.body.contains("/openapi.json"),
        "{}",
        initializer.body
    );
    let bundle = gateway.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.body.len() > 100_000, "the bundled UI is missing");
    let document = gateway.get("/openapi.json").await;
    assert_eq!(document.status, 200);
    assert_eq!(document.json()["openapi"], "3.1.0");
}
