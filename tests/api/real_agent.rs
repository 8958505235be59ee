//! Checks against a real qemu-ga.

use std::time::Duration;

use crate::support::gateway::Gateway;
use crate::support::qga::QemuGa;
use crate::support::{eventually, processes_with, unique_marker};

fn exec_config(command: &[&str], timeout: u32) -> String {
    let command = serde_json::to_string(command).unwrap();
    format!(
        "exposeOutput: true\nreadinessProbe:\n  exec:\n    command: {command}\n  timeoutSeconds: {timeout}\nlivenessProbe:\n  guestAgentPing: {{}}\n"
    )
}

#[tokio::test]
async fn guest_agent_ping_passes_with_200_ok() {
    let agent = QemuGa::start();
    let gateway = Gateway::start("livenessProbe:\n  guestAgentPing: {}\n", agent.socket());
    let reply = gateway.get("/live").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert!(reply.content_type.starts_with("text/plain"));
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 200);
    assert_eq!(report["handler"], "guestAgentPing");
    assert_eq!(report["result"], "success");
    assert_eq!(report["reason"], serde_json::Value::Null);
}

#[tokio::test]
async fn exec_exit_zero_passes_and_non_zero_fails_with_the_exit_code() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(
        &exec_config(&["sh", "-c", "echo out; echo err >&2; exit 0"], 5),
        agent.socket(),
    );
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["exitCode"], 0);
    assert_eq!(report["stdout"], "out\n");
    assert_eq!(report["stderr"], "err\n");

    let other_agent = QemuGa::start();
    let failing = Gateway::start(
        &exec_config(&["sh", "-c", "exit 3"], 5),
        other_agent.socket(),
    );
    let reply = failing.get("/ready").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "exec: exit code 3\n")
    );
    let (_, report) = failing.report("/ready").await;
    assert_eq!(report["result"], "failure");
    assert_eq!(report["exitCode"], 3);
    assert_eq!(report["signal"], serde_json::Value::Null);
}

#[tokio::test]
async fn exec_killed_by_a_signal_fails_naming_the_signal() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(&exec_config(&["sh", "-c", "kill -9 $$"], 5), agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(report["result"], "failure");
    assert_eq!(report["signal"], 9);
    assert_eq!(report["exitCode"], serde_json::Value::Null);
    assert_eq!(report["reason"], "exec: killed by signal 9 (SIGKILL)");
}

#[tokio::test]
async fn exec_of_a_missing_program_is_an_error_with_the_agents_reason() {
    let agent = QemuGa::start();
    let gateway = Gateway::start(&exec_config(&["/nonexistent/probe"], 5), agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(report["result"], "error");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("exec: cannot start the command:"),
        "{reason}"
    );
    assert!(reason.contains("No such file or directory"), "{reason}");
}

#[tokio::test]
async fn arguments_with_quotes_reach_the_guest_unchanged() {
    let agent = QemuGa::start();
    let tricky = "it's \"quoted\" \\ and\nsplit";
    let gateway = Gateway::start(&exec_config(&["printf", "%s", tricky], 5), agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stdout"], tricky);
}

#[tokio::test]
async fn exec_timeout_does_not_start_a_second_guest_process_while_the_first_runs() {
    let agent = QemuGa::start();
    let marker = unique_marker("timeout");
    let script = "sleep 3; true";
    let gateway = Gateway::start(
        &exec_config(&["sh", "-c", script, &marker], 1),
        agent.socket(),
    );

    let (status, first) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(first["result"], "timeout");
    assert_eq!(first["reason"], "timed out after 1s");
    assert_eq!(processes_with(&marker).len(), 1);

    let (status, second) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    let reason = second["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("previous command still running (pid "),
        "{reason}"
    );
    assert_eq!(
        processes_with(&marker).len(),
        1,
        "a second guest process was started"
    );

    // Once the first exits and is reaped, the probe runs the command again.
    eventually(
        "the stuck process to be reaped",
        Duration::from_secs(10),
        || async {
            let (_, report) = gateway.report("/ready").await;
            report["reason"] == "timed out after 1s"
        },
    )
    .await;
    assert_eq!(processes_with(&marker).len(), 1);
}

#[tokio::test]
async fn huge_output_passes_in_bounded_memory_and_the_agent_survives() {
    let mut agent = QemuGa::start();
    let config = format!(
        "{}outputExcerptBytes: 1024\n",
        exec_config(&["head", "-c", "30000000", "/dev/zero"], 20)
    );
    let gateway = Gateway::start(&config, agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stdout"].as_str().unwrap().len(), 1024);
    assert_eq!(report["stdoutTruncated"], true);
    let peak = gateway.peak_rss_kib();
    eprintln!("gateway peak RSS after a 30 MB exec output: {peak} KiB");
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
    assert!(agent.is_running(), "the agent died");
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn agent_absent_at_start_then_started_is_reached_without_restarting_the_gateway() {
    let mut agent = QemuGa::not_started();
    let gateway = Gateway::start(&exec_config(&["true"], 2), agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(report["result"], "error");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent unavailable: cannot connect to unix://"),
        "{report}"
    );
    agent.launch();
    eventually(
        "readiness to pass once the agent is up",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 200 },
    )
    .await;
}

#[tokio::test]
async fn agent_killed_and_restarted_fails_then_recovers() {
    let mut agent = QemuGa::start();
    let gateway = Gateway::start(&exec_config(&["true"], 1), agent.socket());
    assert_eq!(gateway.get("/live").await.status, 200);
    agent.kill();
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.starts_with("agent unavailable"),
        "{}",
        reply.body
    );
    agent.launch();
    eventually("liveness to pass again", Duration::from_secs(5), || async {
        gateway.get("/live").await.status == 200
    })
    .await;
    assert_eq!(gateway.get("/ready").await.status, 200);
}

#[tokio::test]
async fn a_disabled_guest_exec_is_reported_as_disabled() {
    let agent = QemuGa::start_with(&["-b", "guest-exec"]);
    let gateway = Gateway::start(&exec_config(&["true"], 2), agent.socket());
    let (status, report) = gateway.report("/ready").await;
    assert_eq!(status, 503);
    assert_eq!(report["result"], "error");
    assert_eq!(
        report["reason"],
        "guest-exec is disabled in the guest agent"
    );
    assert_eq!(gateway.get("/live").await.status, 200);
}

#[tokio::test]
async fn seed_example_is_ready_only_while_the_file_exists() {
    let agent = QemuGa::start();
    let file = agent.dir().join("healthy.txt");
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"cat\", \"{}\"]\n  timeoutSeconds: 5\nlivenessProbe:\n  guestAgentPing: {{}}\n  timeoutSeconds: 1\n",
        file.display()
    );
    let gateway = Gateway::start(&config, agent.socket());
    assert_eq!(gateway.get("/ready").await.status, 503);
    std::fs::write(&file, "ok").unwrap();
    assert_eq!(gateway.get("/ready").await.status, 200);
    std::fs::remove_file(&file).unwrap();
    let reply = gateway.get("/ready").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "exec: exit code 1\n")
    );
    assert_eq!(gateway.get("/live").await.status, 200);
}

#[tokio::test]
async fn liveness_passes_under_the_grace_until_the_agent_first_answers() {
    let mut agent = QemuGa::not_started();
    let config = "livenessGraceSeconds: 600\nreadinessProbe:\n  guestAgentPing: {}\nlivenessProbe:\n  guestAgentPing: {}\n";
    let gateway = Gateway::start(config, agent.socket());
    let (status, report) = gateway.report("/live").await;
    assert_eq!(status, 200);
    assert_eq!(report["status"], "success");
    let note = report["reason"].as_str().unwrap();
    assert!(note.starts_with("agent not reached yet (grace: "), "{note}");
    // Readiness is never graced.
    assert_eq!(gateway.get("/ready").await.status, 503);

    agent.launch();
    eventually(
        "the agent to be reached",
        Duration::from_secs(5),
        || async { gateway.get("/ready").await.status == 200 },
    )
    .await;
    agent.kill();
    // Once the agent has answered, the grace is over for good.
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
}

#[tokio::test]
async fn liveness_fails_before_first_contact_when_the_grace_is_zero() {
    let agent = QemuGa::not_started();
    let config = "livenessGraceSeconds: 0\nlivenessProbe:\n  guestAgentPing: {}\n";
    let gateway = Gateway::start(config, agent.socket());
    let reply = gateway.get("/live").await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.starts_with("agent unavailable"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_guest_process() {
    let agent = QemuGa::start();
    let counter = agent.dir().join("runs");
    let script = format!("echo run >> {}; sleep 0.5", counter.display());
    let gateway = Gateway::start(&exec_config(&["sh", "-c", &script], 5), agent.socket());
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let url = gateway.url("/ready");
        requests.spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    }
    let statuses: Vec<_> = requests.join_all().await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    let runs = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(
        runs.lines().count(),
        1,
        "the command ran {} times",
        runs.lines().count()
    );
}

#[tokio::test]
async fn both_vm_manifest_forms_configure_the_checks() {
    let agent = QemuGa::start();
    let file = agent.dir().join("ready");
    std::fs::write(&file, "").unwrap();
    let vm = format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: demo
spec:
  runStrategy: Always
  template:
    metadata:
      annotations:
        probe-gateway.kubevirt.io/probes: |
          readinessProbe:
            exec:
              command: ["test", "-e", "{}"]
            timeoutSeconds: 5
          livenessProbe:
            guestAgentPing: {{}}
    spec:
      domain:
        devices: {{}}
      readinessProbe:
        httpGet:
          path: /ready
          port: 8080
      livenessProbe:
        httpGet:
          path: /live
          port: 8080
"#,
        file.display()
    );
    let mut gateway = Gateway::start(&vm, agent.socket());
    assert_eq!(gateway.get("/ready").await.status, 200);
    assert_eq!(gateway.get("/live").await.status, 200);
    gateway.stop();

    let vmi = format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: demo
spec:
  domain:
    devices: {{}}
  readinessProbe:
    exec:
      command: ["test", "-e", "{}/missing"]
    initialDelaySeconds: 120
    timeoutSeconds: 3
    periodSeconds: 20
    failureThreshold: 3
"#,
        agent.dir().display()
    );
    let gateway = Gateway::start(&vmi, agent.socket());
    assert_eq!(gateway.get("/ready").await.status, 503);
    assert_eq!(gateway.get("/live").await.status, 404);
}

#[tokio::test]
async fn the_log_has_one_info_event_per_state_change_with_the_reason_and_output() {
    let agent = QemuGa::start();
    let file = agent.dir().join("healthy.txt");
    let config = format!(
        "readinessProbe:\n  exec:\n    command: [\"cat\", \"{}\"]\n",
        file.display()
    );
    let gateway = Gateway::start(&config, agent.socket());
    for _ in 0..5 {
        assert_eq!(gateway.get("/ready").await.status, 503);
    }
    std::fs::write(&file, "fine").unwrap();
    for _ in 0..3 {
        assert_eq!(gateway.get("/ready").await.status, 200);
    }
    let events: Vec<_> = gateway
        .logs()
        .into_iter()
        .filter(|e| e["probe"] == "readiness" && e["level"] == "INFO")
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["message"], "check failed");
    assert_eq!(events[0]["check"], "readiness");
    assert_eq!(events[0]["reason"], "exec: exit code 1");
    assert_eq!(events[0]["exit_code"], 1);
    assert!(
        events[0]["stderr"]
            .as_str()
            .unwrap()
            .contains("No such file or directory")
    );
    assert_eq!(events[1]["message"], "check passed");
}
