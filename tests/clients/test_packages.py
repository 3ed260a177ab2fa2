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
