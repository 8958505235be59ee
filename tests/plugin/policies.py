#!/usr/bin/env python3
"""KubeVirt's validating policies for plugin sidecars and Plugin resources, and the
Plugin's hook condition, evaluated with a CEL implementation (cel-python, `celpy`) against
the injector's patched launcher pod and deploy/plugin/plugin.yaml.

The expressions are written out as they are in kubevirt/kubevirt, at the commits pinned
below (pkg/virt-operator/resource/generate/components/validatingadmissionpolicies/):
main at d923fdb815 (2026-08-22), and the v1.9.0 tag (79d34c1762), whose sub-path policy
lacks the `!has(c.volumeMounts) ||` lines (added by 40ac35f93e).

    policies.py POD_JSON PLUGIN_JSON

prints one JSON object: for each check its name and its result (true, false, or an
"error: ..." string, which the apiserver would take as a denial: the policies'
failurePolicy is Fail).
"""

import json
import pathlib
import sys

try:
    import celpy
except ImportError as error:  # the test reports this; it must not pass silently
    print(f"policies.py needs cel-python (scripts/requirements-test.txt): {error}", file=sys.stderr)
    sys.exit(2)

KUBEVIRT_MAIN = "d923fdb815cd2016ddaebdaaa51db04133576d72"
KUBEVIRT_V1_9_0 = "79d34c1762169e5b0370ec491cef5ca12e6b504c"

# validatingadmissionpolicy_sidecar.go, kubevirt-plugin-sidecar-subpath-policy (main).
SUBPATH_VARIABLES_MAIN = {
    "containersHaveSubPath": '''object.spec.containers.all(c,
    c.name == "compute" ||
    !has(c.volumeMounts) ||
    !c.volumeMounts.exists(vm, vm.name == "kubevirt-plugin-sockets") ||
    c.volumeMounts.filter(vm, vm.name == "kubevirt-plugin-sockets")
        .all(vm, has(vm.subPath) && vm.subPath != ""))''',
    "initContainersHaveSubPath": '''!has(object.spec.initContainers) ||
    object.spec.initContainers.all(c,
        !has(c.volumeMounts) ||
        !c.volumeMounts.exists(vm, vm.name == "kubevirt-plugin-sockets") ||
        c.volumeMounts.filter(vm, vm.name == "kubevirt-plugin-sockets")
            .all(vm, has(vm.subPath) && vm.subPath != ""))''',
    "ephemeralContainersHaveSubPath": '''!has(object.spec.ephemeralContainers) ||
    object.spec.ephemeralContainers.all(c,
        !has(c.volumeMounts) ||
        !c.volumeMounts.exists(vm, vm.name == "kubevirt-plugin-sockets") ||
        c.volumeMounts.filter(vm, vm.name == "kubevirt-plugin-sockets")
            .all(vm, has(vm.subPath) && vm.subPath != ""))''',
}
# The same policy at v1.9.0: without the `!has(c.volumeMounts) ||` lines.
SUBPATH_VARIABLES_V1_9_0 = {
    name: expression.replace("!has(c.volumeMounts) ||\n", "")
    for name, expression in SUBPATH_VARIABLES_MAIN.items()
}
SUBPATH_VALIDATION = ("variables.containersHaveSubPath && variables.initContainersHaveSubPath"
                      " && variables.ephemeralContainersHaveSubPath")

# validatingadmissionpolicy_sidecar.go, kubevirt-plugin-socket-path-policy (same at both).
SOCKET_PATH_VALIDATIONS = {
    "socket-path-ends-in-sock": '''!has(object.spec.domainHooks) ||
	object.spec.domainHooks.all(dh,
	    !has(dh.sidecar) || dh.sidecar.socketPath.endsWith(".sock"))''',
    "socket-path-fits": '''!has(object.spec.domainHooks) ||
	object.spec.domainHooks.all(dh,
	    !has(dh.sidecar) || size(dh.sidecar.socketPath) <= 108)''',
    "socket-path-in-plugin-dir": '''!has(object.spec.domainHooks) ||
	object.spec.domainHooks.all(dh,
	    !has(dh.sidecar) ||
	    dh.sidecar.socketPath.startsWith(
	        "/var/run/kubevirt-plugin/" + object.metadata.name + "/"))''',
}

# validatingadmissionpolicy_plugin.go, kubevirt-plugin-validation-policy (same at both).
PLUGIN_VALIDATIONS = {
    "one-of-cel-or-sidecar": "!has(object.spec.domainHooks) || object.spec.domainHooks.all(dh, has(dh.cel) != has(dh.sidecar))",
    "hook-failure-strategy": "!has(object.spec.domainHooks) || object.spec.domainHooks.all(dh, !has(dh.failureStrategy) || dh.failureStrategy in ['Fail', 'Ignore'])",
    "node-hook-failure-strategy": "!has(object.spec.nodeHooks) || object.spec.nodeHooks.all(nh, !has(nh.failureStrategy) || nh.failureStrategy in ['Fail', 'Ignore'])",
    "plugin-failure-strategy": "!has(object.spec.failureStrategy) || object.spec.failureStrategy in ['Fail', 'Ignore']",
}


def evaluate(environment, expression, activation):
    try:
        program = environment.program(environment.compile(expression))
        result = program.evaluate({k: celpy.json_to_cel(v) for k, v in activation.items()})
        return bool(result)
    except Exception as error:  # noqa: BLE001: every failure is a denial here
        return f"error: {type(error).__name__}: {error}"


def subpath_policy(environment, variables, pod):
    computed = {}
    for name, expression in variables.items():
        value = evaluate(environment, expression, {"object": pod})
        if not isinstance(value, bool):
            return f"{name}: {value}"
        computed[name] = value
    return evaluate(environment, SUBPATH_VALIDATION, {"variables": computed})


def condition_on(environment, condition, annotations):
    """The hook condition as virt-launcher evaluates it: on the typed VMI, whose Go field
    `Annotations` is a map, empty (nil in Go) when the VMI has none."""
    return evaluate(environment, condition, {"vmi": {"Annotations": annotations}})


def main():
    pod = json.loads(pathlib.Path(sys.argv[1]).read_text())
    plugin = json.loads(pathlib.Path(sys.argv[2]).read_text())
    environment = celpy.Environment()
    results = {
        "kubevirt": {"main": KUBEVIRT_MAIN, "v1.9.0": KUBEVIRT_V1_9_0},
        "subpath-main": subpath_policy(environment, SUBPATH_VARIABLES_MAIN, pod),
        "subpath-v1.9.0": subpath_policy(environment, SUBPATH_VARIABLES_V1_9_0, pod),
    }
    for name, expression in {**SOCKET_PATH_VALIDATIONS, **PLUGIN_VALIDATIONS}.items():
        results[name] = evaluate(environment, expression, {"object": plugin})
    decision = "probe-gateway.kubevirt.io/decision"
    condition = plugin["spec"]["domainHooks"][0]["condition"]
    results["condition"] = {
        "plugin-road": condition_on(environment, condition, {
            decision: '{"v":1,"inject":true,"port":8190,"road":"plugin","reason":"r"}'}),
        "libvirt-road": condition_on(environment, condition, {
            decision: '{"v":1,"inject":true,"port":8190,"road":"libvirt","reason":"r"}'}),
        "not-injected": condition_on(environment, condition, {
            decision: '{"v":1,"inject":false,"reason":"bridge"}'}),
        "other-annotations": condition_on(environment, condition, {"a": "b"}),
        "no-annotations": condition_on(environment, condition, {}),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
