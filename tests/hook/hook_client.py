#!/usr/bin/env python3
"""A KubeVirt hook client, as virt-launcher is one: calls a hook sidecar's gRPC services on
its unix socket and prints the outcome as one JSON object.

Independent of the gateway's server code: grpcio, with message classes generated at run
time by grpcio-tools from the repository's .proto files, and the method paths written out
as virt-launcher dials them.

    hook_client.py SOCKET info
    hook_client.py SOCKET define DOMAIN_XML_FILE VMI_JSON_FILE [--version v1alpha2|v1alpha3]
    hook_client.py SOCKET shutdown
    hook_client.py SOCKET pre-cloud-init

Exit 0 with {"ok": true, ...} or {"ok": false, "code": "INVALID_ARGUMENT", "details": "..."};
exit 2 when the tools are missing (the test then fails loudly).
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
    print(f"hook_client.py needs grpcio and grpcio-tools (scripts/requirements-test.txt): {error}",
          file=sys.stderr)
    sys.exit(2)

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTOS = ["kubevirt/hooks/info.proto", "kubevirt/hooks/v1alpha2.proto",
          "kubevirt/hooks/v1alpha3.proto"]

INFO = "/kubevirt.hooks.info.Info/Info"
ON_DEFINE_DOMAIN = "/kubevirt.hooks.{version}.Callbacks/OnDefineDomain"
PRE_CLOUD_INIT_ISO = "/kubevirt.hooks.v1alpha3.Callbacks/PreCloudInitIso"
SHUTDOWN = "/kubevirt.hooks.v1alpha3.Callbacks/Shutdown"


def messages(out_dir):
    """Generates the message classes from the .proto files and imports them."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}",
                          f"--python_out={out_dir}", *PROTOS])
    if status != 0:
        raise SystemExit(f"protoc failed on {PROTOS}")
    sys.path.insert(0, str(out_dir))
    return {name: importlib.import_module(f"kubevirt.hooks.{name}_pb2")
            for name in ("info", "v1alpha2", "v1alpha3")}


def call(channel, path, request, response_class, timeout):
    method = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=response_class.FromString)
    return method(request, timeout=timeout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info")
    define = sub.add_parser("define")
    define.add_argument("domain")
    define.add_argument("vmi")
    define.add_argument("--version", default="v1alpha3", choices=["v1alpha2", "v1alpha3"])
    sub.add_parser("shutdown")
    sub.add_parser("pre-cloud-init")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        pb = messages(out_dir)
        # As virt-launcher dials: plaintext, authority "localhost".
        with grpc.insecure_channel(f"unix://{args.socket}",
                                   options=[("grpc.default_authority", "localhost")]) as channel:
            try:
                if args.command == "info":
                    # virt-launcher gives Info a 1 s deadline.
                    result = call(channel, INFO, pb["info"].InfoParams(), pb["info"].InfoResult, 1)
                    out = {"ok": True, "name": result.name, "versions": list(result.versions),
                           "hookPoints": [{"name": p.name, "priority": p.priority}
                                          for p in result.hookPoints]}
                elif args.command == "define":
                    version = pb[args.version]
                    request = version.OnDefineDomainParams(
                        domainXML=pathlib.Path(args.domain).read_bytes(),
                        vmi=pathlib.Path(args.vmi).read_bytes())
                    result = call(channel, ON_DEFINE_DOMAIN.format(version=args.version), request,
                                  version.OnDefineDomainResult, 60)
                    out = {"ok": True, "domainXML": result.domainXML.decode()}
                elif args.command == "shutdown":
                    call(channel, SHUTDOWN, pb["v1alpha3"].ShutdownParams(),
                         pb["v1alpha3"].ShutdownResult, 60)
                    out = {"ok": True}
                else:
                    call(channel, PRE_CLOUD_INIT_ISO, pb["v1alpha3"].PreCloudInitIsoParams(),
                         pb["v1alpha3"].PreCloudInitIsoResult, 60)
                    out = {"ok": True}
            except grpc.RpcError as error:
                out = {"ok": False, "code": error.code().name, "details": error.details()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
