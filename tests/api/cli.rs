//! The command line: validate, check, and config errors at start-up.

use crate::support::gateway::run_cli;
use crate::support::qga::QemuGa;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn validate_accepts_the_example_and_prints_one_line() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateway.yaml");
    let (code, stdout, stderr) = run_cli(&["validate", "--config", example], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn validate_reports_every_error_with_its_field_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.yaml",
        "agent: relative.sock\nreadinessProbe:\n  exec:\n    command: [\"true\"]\n  guestAgentPing: {}\nlivenessProbe:\n  guestAgentPing: {}\n  timeoutSeconds: 0\n  bogus: 1\n",
    );
    let (code, stdout, stderr) = run_cli(&["validate", "--config", &config], &[]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    for expected in [
        "readinessProbe: exactly one of exec, guestAgentPing must be set (found 2)",
        "livenessProbe.timeoutSeconds: must be at least 1",
        "livenessProbe.bogus",
        "agent",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.lines().count() >= 4, "{stderr}");
}

#[test]
fn validate_accepts_a_manifest_without_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "vmi.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: x\nspec:\n  livenessProbe:\n    guestAgentPing: {}\n",
    );
    let (code, stdout, stderr) = run_cli(&["validate", "--config", &config], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("VirtualMachineInstance"), "{stdout}");
}

#[test]
fn serve_without_an_agent_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "g.yaml",
        "livenessProbe:\n  guestAgentPing: {}\n",
    );
    let (code, _, stderr) = run_cli(
        &["serve", "--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("agent: not set"), "{stderr}");
}

#[test]
fn serve_with_an_invalid_config_exits_2_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "g.yaml",
        "readinessProbe:\n  httpGet:\n    port: 8080\n",
    );
    let (code, _, stderr) = run_cli(&["serve", "--config", &config, "--agent", "/x.sock"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("kubelet can probe"), "{stderr}");
}

#[test]
fn a_bad_flag_value_is_a_usage_error() {
    let (code, _, stderr) = run_cli(
        &["serve", "--config", "/x", "--agent", "tcp://1.2.3.4:5"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("--agent"), "{stderr}");
    let (code, _, _) = run_cli(&["serve", "--config", "/x", "--listen", "nowhere"], &[]);
    assert_eq!(code, 2);
}

#[test]
fn check_exits_0_when_the_check_passes_and_1_with_the_reason_when_it_fails() {
    let agent = QemuGa::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "g.yaml",
        "readinessProbe:\n  exec:\n    command: [\"false\"]\nlivenessProbe:\n  guestAgentPing: {}\n",
    );
    let socket = agent.socket().display().to_string();
    let (code, stdout, stderr) = run_cli(
        &["check", "liveness", "--config", &config, "--agent", &socket],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("liveness: ok"), "{stdout}");
    let (code, _, stderr) = run_cli(
        &["check", "readiness", "--config", &config],
        &[("PROBE_GATEWAY_AGENT", &socket)],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("readiness: exec: exit code 1"), "{stderr}");
    let mut agent = agent;
    assert!(
        agent.is_running(),
        "the agent did not survive the check command"
    );
}

#[test]
fn check_of_an_unconfigured_probe_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "g.yaml",
        "livenessProbe:\n  guestAgentPing: {}\n",
    );
    let (code, _, stderr) = run_cli(
        &[
            "check",
            "readiness",
            "--config",
            &config,
            "--agent",
            "/nowhere.sock",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("readinessProbe is not configured"),
        "{stderr}"
    );
}

#[test]
fn the_config_flag_can_come_from_the_environment_and_the_flag_wins() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.yaml",
        "livenessProbe:\n  guestAgentPing: {}\n",
    );
    let bad = write(dir.path(), "bad.yaml", "nonsense: true\n");
    let (code, _, stderr) = run_cli(&["validate"], &[("PROBE_GATEWAY_CONFIG", &good)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, _) = run_cli(
        &["validate", "--config", &bad],
        &[("PROBE_GATEWAY_CONFIG", &good)],
    );
    assert_eq!(code, 2);
}
