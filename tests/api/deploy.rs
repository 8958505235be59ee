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

/// The binaries reach the image from the builds above, under their own names, and the
/// libvirt one's libraries come with them, as does the gateway's own licence; the
/// default entry point stays the default binary.
#[test]
fn the_image_holds_both_binaries_and_the_libvirt_libraries() {
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).expect("Dockerfile");
    let run = dockerfile_run_commands(&dockerfile);
    for command in [
        "install -D -m 0755 target/release/virt-probe-gateway /out/virt-probe-gateway",
        "install -D -m 0755 target/release/virt-probe-gateway-inject /out/virt-probe-gateway-inject",
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
        "COPY --from=build /out/virt-probe-gateway-inject /usr/local/bin/virt-probe-gateway-inject",
        "COPY --from=build /out/virt-probe-gateway-libvirt /usr/local/bin/virt-probe-gateway-libvirt",
        "COPY LICENSE /usr/share/doc/virt-probe-gateway/LICENSE",
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

/// The objects of deploy/injector/injector.yaml, by kind.
fn injector_objects() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/injector/injector.yaml")).expect("read");
    serde_saphyr::from_multiple(&text).expect("YAML documents")
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/injector/injector.yaml"))
}

/// The injector's install: no API access asked for, never in the way of a VM (Ignore,
/// no side effects), the webhooks cover what the injector decides on and injects into,
/// and the Service, Deployment, certificate and webhook configuration agree on names
/// and ports.
#[test]
fn the_injector_manifests_follow_the_deployment_rules() {
    let objects = injector_objects();
    for kind in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"] {
        assert!(
            objects.iter().all(|o| o["kind"] != kind),
            "the injector needs no {kind}"
        );
    }
    let deployment = object(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "inject");
    assert!(args.contains(&"--listen=[::]:8443"));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let ports: Vec<(&str, u64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(ports.contains(&("webhook", 8443)) && ports.contains(&("metrics", 8081)));
    let image = container["image"].as_str().unwrap();
    assert!(
        image.contains("@sha256:"),
        "the injector's image by digest: {image}"
    );

    let service = object(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    let namespace = service["metadata"]["namespace"].as_str().unwrap();
    let service_name = service["metadata"]["name"].as_str().unwrap();
    let certificate = object(&objects, "Certificate");
    assert_eq!(
        certificate["spec"]["dnsNames"][0],
        format!("{service_name}.{namespace}.svc")
    );
    let secret = certificate["spec"]["secretName"].as_str().unwrap();
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == secret),
        "the Deployment mounts the certificate's Secret"
    );

    let configuration = object(&objects, "MutatingWebhookConfiguration");
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!(
            "{namespace}/{}",
            certificate["metadata"]["name"].as_str().unwrap()
        )
    );
    let mut covered = Vec::new();
    for webhook in configuration["webhooks"].as_array().unwrap() {
        let name = webhook["name"].as_str().unwrap();
        assert_eq!(
            webhook["failurePolicy"], "Ignore",
            "{name}: never in a VM's way"
        );
        assert_eq!(webhook["sideEffects"], "None", "{name}");
        assert_eq!(
            webhook["admissionReviewVersions"],
            serde_json::json!(["v1"]),
            "{name}"
        );
        let client = &webhook["clientConfig"]["service"];
        assert_eq!(
            (client["name"].as_str(), client["namespace"].as_str()),
            (Some(service_name), Some(namespace))
        );
        // The namespace label's value is the road: `enabled` the libvirt one (/mutate),
        // `plugin` the plugin one (/mutate/plugin); pods name theirs in the decision.
        let selector = &webhook["namespaceSelector"];
        let label = "probe-gateway.kubevirt.io/inject";
        match selector["matchLabels"][label].as_str() {
            Some("enabled") => assert_eq!(client["path"], "/mutate", "{name}"),
            Some("plugin") => assert_eq!(client["path"], "/mutate/plugin", "{name}"),
            _ => {
                let expression = &selector["matchExpressions"][0];
                assert_eq!(
                    (expression["key"].as_str(), expression["operator"].as_str()),
                    (Some(label), Some("In")),
                    "{name}"
                );
                assert_eq!(
                    expression["values"],
                    serde_json::json!(["enabled", "plugin"])
                );
                assert_eq!(client["path"], "/mutate", "{name}");
            }
        }
        for rule in webhook["rules"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for operation in rule["operations"].as_array().unwrap() {
                    covered.push(format!(
                        "{} {}",
                        operation.as_str().unwrap(),
                        resource.as_str().unwrap()
                    ));
                }
            }
        }
        if webhook["rules"][0]["resources"][0] == "pods" {
            assert_eq!(
                webhook["objectSelector"]["matchLabels"]["kubevirt.io"], "virt-launcher",
                "only launcher pods reach the injector"
            );
        }
    }
    covered.sort();
    covered.dedup();
    assert_eq!(
        covered,
        [
            "CREATE pods",
            "CREATE virtualmachineinstances",
            "CREATE virtualmachines",
            "UPDATE virtualmachineinstances",
            "UPDATE virtualmachines",
        ]
    );
}

/// The settings in the ConfigMap are read by the injector's own parser: only the missing
/// certificate stops it.
#[test]
fn the_injector_settings_in_deploy_are_accepted() {
    let objects = injector_objects();
    let settings = object(&objects, "ConfigMap")["data"]["inject.yaml"]
        .as_str()
        .expect("inject.yaml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inject.yaml");
    std::fs::write(&path, settings).unwrap();
    let (code, _, stderr) = run_cli(
        &[
            "inject",
            "--config",
            &path.display().to_string(),
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: --tls-cert /nonexistent/tls.crt: "),
        "only the certificate is missing: {stderr}"
    );
}

/// The zero-touch example is a stock VM the injector decides for: exec and
/// guestAgentPing probes, a masquerade interface with ports outside the gateway's.
#[test]
fn the_zero_touch_example_is_a_stock_vm_the_injector_takes() {
    let text = std::fs::read_to_string(repo().join("deploy/injector/vm-zero-touch.yaml")).unwrap();
    assert!(!text.contains("probe-gateway.kubevirt.io/probes"));
    assert!(!text.contains("hooks.kubevirt.io"));
    let path = repo().join("deploy/injector/vm-zero-touch.yaml");
    let (code, stdout, stderr) =
        run_cli(&["validate", "--config", &path.display().to_string()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("VirtualMachine (checks from its probes)"),
        "{stdout}"
    );
}

/// deploy/plugin/plugin.yaml against the plugin API's fields as KubeVirt defines them
/// (`staging/src/kubevirt.io/api/plugin/v1alpha1/types.go` at d923fdb815, the same at
/// v1.9.0): no field the API lacks (the apiserver would prune or refuse it), values of the
/// right form, the socket where `serve --kubevirt-plugin` listens by default, the webhook
/// named the injector's.
#[test]
fn the_plugin_manifest_has_only_the_plugin_apis_fields() {
    let text = std::fs::read_to_string(repo().join("deploy/plugin/plugin.yaml")).unwrap();
    let plugin: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(plugin["apiVersion"], "plugin.kubevirt.io/v1alpha1");
    assert_eq!(plugin["kind"], "Plugin");
    assert!(
        plugin["metadata"]["namespace"].is_null(),
        "Plugin is cluster-scoped"
    );
    let only = |value: &Value, fields: &[&str], what: &str| {
        for key in value.as_object().unwrap().keys() {
            assert!(
                fields.contains(&key.as_str()),
                "{what}.{key} is not a field of the API"
            );
        }
    };
    only(&plugin, &["apiVersion", "kind", "metadata", "spec"], "");
    let spec = &plugin["spec"];
    only(
        spec,
        &[
            "condition",
            "failureStrategy",
            "domainHooks",
            "nodeHooks",
            "mutatingAdmissionPolicies",
            "validatingAdmissionPolicies",
            "mutatingAdmissionWebhooks",
            "validatingAdmissionWebhooks",
        ],
        "spec",
    );
    let strategies = ["Fail", "Ignore"];
    assert!(strategies.contains(&spec["failureStrategy"].as_str().unwrap()));
    let hooks = spec["domainHooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    only(
        hook,
        &["cel", "sidecar", "condition", "failureStrategy", "timeout"],
        "domainHooks[0]",
    );
    only(&hook["sidecar"], &["socketPath"], "domainHooks[0].sidecar");
    assert_eq!(
        hook["sidecar"]["socketPath"], "/var/run/kubevirt-plugin/probe-gateway/domain-hook.sock",
        "serve --kubevirt-plugin's default --plugin-socket"
    );
    assert_eq!(hook["failureStrategy"], "Ignore");
    // A Go duration (metav1.Duration), at most KubeVirt's 30 s default.
    let timeout = hook["timeout"].as_str().unwrap();
    let seconds: u64 = timeout.strip_suffix('s').unwrap().parse().unwrap();
    assert!((1..=30).contains(&seconds), "{timeout}");
    let condition = hook["condition"].as_str().unwrap();
    assert!(
        condition.starts_with("\"probe-gateway.kubevirt.io/decision\" in vmi.Annotations &&"),
        "{condition}"
    );
    assert!(
        spec["condition"].is_null(),
        "the filter is on the hook (docs/inject.md, \"The plugin road\")"
    );
    for reference in spec["mutatingAdmissionWebhooks"].as_array().unwrap() {
        only(reference, &["name"], "spec.mutatingAdmissionWebhooks[]");
    }
    let objects = injector_objects();
    assert_eq!(
        spec["mutatingAdmissionWebhooks"][0]["name"],
        object(&objects, "MutatingWebhookConfiguration")["metadata"]["name"]
    );
}
