#!/usr/bin/env python3
"""Run a Go protoc plugin with a Go import path chosen for every proto file.

The protos carry no `go_package` option (the contract stays language-neutral),
and buf's managed mode cannot be limited to the Go plugins: it would also
rewrite the descriptors embedded in the Python output. So `buf.gen.yaml` runs
the Go plugins through this shim:

    local: [python, clients/go/tools/protoc_gen_go_packages.py, protoc-gen-go]

It reads buf's CodeGeneratorRequest, adds an `M<file>=<import path>;<name>`
parameter for each file without a `go_package` (any new proto under protos/ is
covered automatically), and pipes the request to the real plugin. Files that
have a `go_package` keep it: the well-known types map to
google.golang.org/protobuf/types/known/..., and the vendored
google/rpc/status.proto to Debian's google.golang.org/genproto.

`poolstream/v1/pooling.proto` -> `github.com/poolstream/poolstream/clients/go/gen/poolstream/v1;poolstreamv1`
`poolstream/payloads/text_embedding/v1/x.proto`
    -> `github.com/poolstream/poolstream/clients/go/gen/poolstream/payloads/text_embedding/v1;textembeddingv1`
"""

import posixpath
import re
import subprocess
import sys

from google.protobuf.compiler import plugin_pb2

IMPORT_ROOT = "github.com/poolstream/poolstream/clients/go/gen"


def go_package(proto_path: str) -> str:
    directory = posixpath.dirname(proto_path)
    parts = directory.split("/")
    # Package name like buf's managed mode: last non-version element + version.
    if len(parts) >= 2 and re.fullmatch(r"v\d+((alpha|beta)\d*)?", parts[-1]):
        name = parts[-2] + parts[-1]
    else:
        name = parts[-1]
    name = re.sub(r"[^a-z0-9]", "", name.lower())
    return f"{IMPORT_ROOT}/{directory};{name}"


def main() -> int:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: protoc_gen_go_packages.py PLUGIN [ARGS...]\n")
        return 2
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    params = [p for p in request.parameter.split(",") if p]
    for f in request.proto_file:
        if not f.options.go_package:
            params.append(f"M{f.name}={go_package(f.name)}")
    request.parameter = ",".join(params)
    result = subprocess.run(
        sys.argv[1:], check=False, input=request.SerializeToString(), stdout=subprocess.PIPE
    )
    sys.stdout.buffer.write(result.stdout)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
