"""The Node package is publishable: `npm pack` succeeds, ships types and the generated client,
and the packed module calls a live server."""

from __future__ import annotations

import json
import tarfile

from tests.clients.helpers import ROOT, run, tool_env

NODE = ROOT / "clients" / "node"


def test_npm_pack_and_use_the_packed_module(client_programs, address, tmp_path):
    meta = json.loads((NODE / "package.json").read_text())
    assert not meta.get("private") and meta["name"] and meta["version"] and meta["license"] == "Apache-2.0"
    assert meta["types"] == "dist/index.d.ts" and meta["main"] == "dist/index.js"
    assert all(not v[0].isdigit() for v in meta["dependencies"].values())  # ranges for a library
    done = run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)], cwd=NODE, timeout=300)
    [packed] = json.loads(done.stdout[done.stdout.index("["):])
    files = {f["path"] for f in packed["files"]}
    assert {"package.json", "LICENSE", "README.md", "dist/index.js", "dist/index.d.ts", "dist/main.js"} <= files
    assert not any(f.startswith(("src/", "node_modules/")) for f in files)
    with tarfile.open(tmp_path / packed["filename"]) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    package = tmp_path / "unpacked" / "package"
    script = f"""
const grpc = require("@grpc/grpc-js");
const ps = require({json.dumps(str(package))});
const client = new ps.PoolingServiceClient({json.dumps(address)}, grpc.credentials.createInsecure());
client.getServerInfo(ps.poolingService.GetServerInfoRequest.fromPartial({{}}), (err, info) => {{
  if (err) {{ console.error(err.message); process.exit(1); }}
  console.log(JSON.stringify({{plugin: info.plugin.name, shape: info.model.outputShape}}));
  client.close();
}});
"""
    env = tool_env(NODE_PATH=str(NODE / "node_modules"))
    out = json.loads(run(["node", "-e", script], env=env, timeout=120).stdout)
    assert out == {"plugin": "text_embedding", "shape": [384]}


def test_go_client_is_a_module_that_builds_offline(client_programs):
    """clients/go is a Go module: go.mod names the module, the generated code and the programs
    import under it, and `go build ./...` works in module mode with no proxy (vendor/ is
    assembled from Debian's Go sources by `make client-setup`)."""
    import re

    go_dir = ROOT / "clients" / "go"
    module = re.search(r"^module\s+(\S+)", (go_dir / "go.mod").read_text(), re.M).group(1)
    shim = (go_dir / "tools" / "protoc_gen_go_packages.py").read_text()
    assert f'IMPORT_ROOT = "{module}/gen"' in shim
    checked = 0
    for path in [*go_dir.glob("cmd/*/main.go"), *go_dir.glob("gen/**/*.pb.go")]:
        for imported in re.findall(r'^\s*(?:\w+\s+)?"([^"\s]*poolstream[^"\s]*)"\s*$', path.read_text(), re.M):
            assert imported.startswith(module + "/"), (path, imported)
            checked += 1
    assert checked >= 3  # the programs import the generated packages
    env = tool_env(GO111MODULE="on", GOFLAGS="-mod=vendor", GOPROXY="off", GOCACHE=str(ROOT / ".gopath" / "cache"),
                   CGO_ENABLED="0")
    assert run(["go", "list", "-m"], cwd=go_dir, env=env).stdout.strip() == module
    run(["go", "build", "./..."], cwd=go_dir, env=env, timeout=600)
    listed = run(["go", "list", "./..."], cwd=go_dir, env=env).stdout.split()
    assert f"{module}/gen/poolstream/v1" in listed and f"{module}/cmd/poolstream-go-client" in listed
