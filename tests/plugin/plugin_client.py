#!/usr/bin/env python3
"""A KubeVirt plugin client, as virt-launcher is one (KubeVirt 1.9, the Plugins gate): calls
a plugin sidecar's DomainHookService/MutateDomain on its unix socket and prints the outcome
as one JSON object.

Independent of the gateway's server code: grpcio, with the message classes generated at run
time by grpcio-tools from KubeVirt's plugin proto (proto/kubevirt/hooks/plugins/v1alpha1/
api.proto), and the method path written out as virt-launcher dials it.

    plugin_client.py SOCKET mutate DOMAIN_XML_FILE VMI_JSON_FILE CONTEXT [--domain-type T]
    plugin_client.py SOCKET mutate DOMAIN_XML_FILE VMI_JSON_FILE --no-context

Exit 0 with {"ok": true, "domain": "..."} or {"ok": false, "code": "INVALID_ARGUMENT",
"details": "..."}; exit 2 when the tools are missing (the test then fails loudly).
"""

import argparse
import importlib
import json
import pathlib
import sys
import tempfile

try:
    import grpc
    from grpc_tools import protoc
except ImportError as error:  # the test reports this; it must not pass silently
    print(f"plugin_client.py needs grpcio and grpcio-tools (scripts/requirements-test.txt): {error}",
          file=sys.stderr)
    sys.exit(2)

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTO = "kubevirt/hooks/plugins/v1alpha1/api.proto"
MUTATE_DOMAIN = "/kubevirt.hooks.plugins.v1alpha1.DomainHookService/MutateDomain"


def messages(out_dir):
    """Generates the message classes from KubeVirt's plugin proto and imports them."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                          f"--python_out={out_dir}", PROTO])
    if status != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("kubevirt.hooks.plugins.v1alpha1.api_pb2")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    sub = parser.add_subparsers(dest="command", required=True)
    mutate = sub.add_parser("mutate")
    mutate.add_argument("domain")
    mutate.add_argument("vmi")
    mutate.add_argument("context", nargs="?", default="Boot")
    mutate.add_argument("--no-context", action="store_true",
                        help="send no sidecar_context at all")
    mutate.add_argument("--domain-type", default="libvirt")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        pb = messages(out_dir)
        request = pb.MutateDomainRequest(
            domain_type=args.domain_type,
            domain=pathlib.Path(args.domain).read_bytes(),
            vmi=pathlib.Path(args.vmi).read_bytes())
        if not args.no_context:
            request.sidecar_context.invocation_context = args.context
        with grpc.insecure_channel(f"unix://{args.socket}",
                                   options=[("grpc.default_authority", "localhost")]) as channel:
            method = channel.unary_unary(MUTATE_DOMAIN,
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=pb.MutateDomainResponse.FromString)
            try:
                # virt-launcher's default per call: 30 s.
                result = method(request, timeout=30)
                out = {"ok": True, "domain": result.domain.decode()}
            except grpc.RpcError as error:
                out = {"ok": False, "code": error.code().name, "details": error.details()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
