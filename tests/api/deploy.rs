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

/// The release builds, in the order the Dockerfile and scripts/test.sh run them: the
/// default binary, then the same main with the libvirt backend in a target dir of its own.
const RELEASE_BUILDS: [&str; 2] = [
    "cargo build --release --locked",
    "cargo build --release --locked --features libvirt --target-dir target/libvirt",
];

/// The commands of the Dockerfile's RUN instructions: continuation lines joined, each
/// `&&`-separated command trimmed.
fn dockerfile_run_commands(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("RUN "))
        .flat_map(|run| run.split("&&"))
        .map(|command| command.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The image is not built here (no Docker engine): its build steps must be the commands
/// CI runs, so that what CI builds and tests is what the image holds.
#[test]
fn the_dockerfile_builds_with_the_commands_ci_runs() {
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).expect("Dockerfile");
    let run = dockerfile_run_commands(&dockerfile);
    let builds: Vec<&str> = run
        .iter()
        .map(String::as_str)
        .filter(|command| command.starts_with("cargo build"))
        .collect();
    assert_eq!(builds, RELEASE_BUILDS, "docker/Dockerfile's cargo builds");
    let test_sh = std::fs::read_to_string(repo().join("scripts/test.sh")).expect("test.sh");
    let release_builds: Vec<&str> = test_sh
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("cargo build --release"))
        .filter(|line| !line.contains("--manifest-path"))
        .collect();
    assert_eq!(
        release_builds, RELEASE_BUILDS,
        "scripts/test.sh's release builds of the gateway (the benchmark's are apart)"
    );
}

/// Both binaries reach the image from the builds above, under their own names, and the
/// libvirt one's libraries come with them; the default entry point stays the default
/// binary.
#[test]
fn the_image_holds_both_binaries_and_the_libvirt_libraries() {
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).expect("Dockerfile");
    let run = dockerfile_run_commands(&dockerfile);
    for command in [
        "install -D -m 0755 target/release/virt-probe-gateway /out/virt-probe-gateway",
        "install -D -m 0755 target/libvirt/release/virt-probe-gateway /out/virt-probe-gateway-libvirt",
        "sh docker/copy-closure.sh /out/virt-probe-gateway-libvirt /out/root",
    ] {
        assert!(
            run.iter().any(|c| c == command),
            "docker/Dockerfile must RUN {command}"
        );
    }
    for copy in [
        "COPY --from=build /out/root/ /",
        "COPY --from=build /out/virt-probe-gateway /usr/local/bin/virt-probe-gateway",
        "COPY --from=build /out/virt-probe-gateway-libvirt /usr/local/bin/virt-probe-gateway-libvirt",
    ] {
        assert!(
            dockerfile.lines().any(|l| l.trim() == copy),
            "docker/Dockerfile must {copy}"
        );
    }
    assert!(
        run.iter()
            .any(|c| c.starts_with("apt-get install") && c.contains(" libvirt-dev")),
        "the build stage installs libvirt-dev (the virt crate's build and libvirt0)"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/virt-probe-gateway\"]"));
    assert!(dockerfile.contains("CMD [\"serve\"]"));
}
