#!/usr/bin/env python3
"""A launcher pod and the injector's answer for it, checked with tools independent of the
injector: the JSON Patch applied with `jsonpatch` (PyPI), the patched pod validated against
Kubernetes' own OpenAPI schema with `kubernetes-validate` (strict: unknown fields are
errors; its schemas ship with it, nothing is fetched), and the rules a schema cannot say.

    check_pod.py POD_JSON REVIEW_RESPONSE_JSON KUBERNETES_VERSION[,VERSION...]

prints one JSON object: {"patched": POD, "schema_before": {VERSION: "ok" | "the error"},
"schema": {the same, for the patched pod}, "rules": {...}}, each rule true or a string
saying what breaks it.
"""

import base64
import json
import pathlib
import sys

try:
    import jsonpatch
    import kubernetes_validate
except ImportError as error:  # the test reports this; it must not pass silently
    print(f"check_pod.py needs jsonpatch and kubernetes-validate (scripts/requirements-test.txt): {error}",
          file=sys.stderr)
    sys.exit(2)

HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def containers(pod):
    spec = pod["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


def one_handler_per_probe(pod):
    for container in containers(pod):
        for field in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(field)
            if probe is None:
                continue
            present = [h for h in HANDLERS if probe.get(h) is not None]
            if len(present) != 1:
                return f"{container['name']}.{field} has {present}"
    return True


def unique_container_names(pod):
    names = [c["name"] for c in containers(pod)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    return True if not duplicates else f"duplicated: {duplicates}"


def mounted_volumes_exist(pod):
    volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
    for container in containers(pod):
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                return f"{container['name']} mounts {mount['name']}, which is not a volume"
    return True


def compute_first(pod):
    first = pod["spec"]["containers"][0]["name"]
    return True if first == "compute" else f"the first container is {first}"


def quantity(text):
    """Enough of Kubernetes' quantities to compare requests with limits."""
    text = str(text)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3,
                "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def qos_class(pod):
    """Kubernetes' GetPodQOS, over every container (init and sidecars included)."""
    requests, limits, guaranteed = {}, {}, True
    for container in containers(pod):
        resources = container.get("resources", {})
        container_requests = {k: v for k, v in resources.get("requests", {}).items() if k in ("cpu", "memory")}
        container_limits = {k: v for k, v in resources.get("limits", {}).items() if k in ("cpu", "memory")}
        requests.update(container_requests)
        limits.update(container_limits)
        for resource in ("cpu", "memory"):
            limit = container_limits.get(resource)
            request = container_requests.get(resource, limit)
            if limit is None or quantity(request) != quantity(limit):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def main():
    pod = json.loads(pathlib.Path(sys.argv[1]).read_text())
    response = json.loads(pathlib.Path(sys.argv[2]).read_text())
    versions = sys.argv[3].split(",")
    patched = pod
    if response.get("patch"):
        if response.get("patchType") != "JSONPatch":
            raise SystemExit(f"patchType {response.get('patchType')!r}")
        operations = json.loads(base64.b64decode(response["patch"]))
        patched = jsonpatch.apply_patch(pod, operations)
    def validate(document):
        results = {}
        for version in versions:
            try:
                kubernetes_validate.validate(document, version, strict=True)
                results[version] = "ok"
            except kubernetes_validate.ValidationError as error:
                results[version] = f"{'.'.join(str(p) for p in error.path)}: {error.message}"
        return results

    schema_before, schema = validate(pod), validate(patched)
    before, after = qos_class(pod), qos_class(patched)
    print(json.dumps({
        "patched": patched,
        "schema_before": schema_before,
        "schema": schema,
        "rules": {
            "one handler per probe": one_handler_per_probe(patched),
            "unique container names": unique_container_names(patched),
            "every mounted volume exists": mounted_volumes_exist(patched),
            "compute first": compute_first(patched),
            "QoS class unchanged": True if before == after else f"{before} became {after}",
        },
    }))


if __name__ == "__main__":
    main()
