//! The manifests in deploy/ are accepted by the gateway's own parser, and keep the rules
//! deploy/README.md states, so the examples cannot drift from the code.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::gateway::run_cli;
use crate::support::hook::repo;

fn manifests() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .expect("read deploy/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        })
        .collect();
    found.sort();
    assert!(found.len() >= 2, "deploy/ has its manifests: {found:?}");
    found
}

#[test]
fn every_manifest_in_deploy_is_accepted_by_validate() {
    for manifest in manifests() {
        let (code, stdout, stderr) = run_cli(
            &["validate", "--config", &manifest.display().to_string()],
            &[],
        );
        assert_eq!(code, 0, "{}: {stderr}", manifest.display());
        assert!(stdout.contains(": valid: VirtualMachine"), "{stdout}");
    }
}

/// A hook-sidecar VM: kubelet's probes are httpGet to the gateway with `timeoutSeconds`
/// the check's + 1, and its interface lists its ports (or kubelet could not reach the
/// gateway through masquerade).
#[test]
fn hook_sidecar_manifests_follow_the_deployment_rules() {
    let mut hooked = 0;
    for manifest in manifests() {
        let text = std::fs::read_to_string(&manifest).expect("read");
        let vm: Value = serde_saphyr::from_str(&text).expect("YAML");
        let template = &vm["spec"]["template"];
        let annotations = &template["metadata"]["annotations"];
        let Some(sidecars) = annotations["hooks.kubevirt.io/hookSidecars"].as_str() else {
            continue;
        };
        hooked += 1;
        let name = manifest.display();
        let sidecars: Value = serde_json::from_str(sidecars).expect("hookSidecars is JSON");
        let args: Vec<&str> = sidecars[0]["args"]
            .as_array()
            .expect("sidecar args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(args[..2], ["serve", "--kubevirt-hook"], "{name}");
        if args.contains(&"vsock://vmi:1234") {
            assert_eq!(
                template["spec"]["domain"]["devices"]["autoattachVSOCK"], true,
                "{name}: a vsock agent needs the VM's vsock device"
            );
        }
        let checks: Value = serde_saphyr::from_str(
            annotations["probe-gateway.kubevirt.io/probes"]
                .as_str()
                .expect("the probes annotation"),
        )
        .expect("annotation YAML");
        let spec = &template["spec"];
        for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/live")] {
            let kubelet = &spec[probe];
            assert_eq!(kubelet["httpGet"]["path"], path, "{name} {probe}");
            let check_timeout = checks[probe]["timeoutSeconds"].as_u64().unwrap_or(1);
            assert_eq!(
                kubelet["timeoutSeconds"].as_u64(),
                Some(check_timeout + 1),
                "{name} {probe}: kubelet's timeout must be the check's + 1"
            );
        }
        for interface in spec["domain"]["devices"]["interfaces"]
            .as_array()
            .expect("interfaces")
        {
            if interface.get("masquerade").is_some() {
                let ports = interface["ports"]
                    .as_array()
                    .expect("masquerade with ports");
                assert!(
                    ports.iter().all(|p| p["port"] != 8080),
                    "{name}: the gateway's port must not be forwarded into the guest"
                );
            }
        }
    }
    assert!(hooked >= 1, "deploy/ has a hook-sidecar manifest");
}

/// The image is not built here (no Docker engine): its build step must be the command
/// CI runs, so that what CI builds and tests is what the image holds.
#[test]
fn the_dockerfile_builds_with_the_command_ci_runs() {
    const BUILD: &str = "cargo build --release --locked";
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("RUN {BUILD}"))),
        "docker/Dockerfile must RUN {BUILD}"
    );
    let test_sh = std::fs::read_to_string(repo().join("scripts/test.sh")).expect("test.sh");
    assert!(
        test_sh.lines().any(|l| l.trim() == BUILD),
        "scripts/test.sh must run {BUILD}"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/virt-probe-gateway\"]"));
    assert!(dockerfile.contains("CMD [\"serve\"]"));
}
