"""Every example of the README's HTTP section runs against live servers and answers as it should.

The commands and the Python snippet come from README.md between
``<!-- http:start -->`` and ``<!-- http:end -->``. The README's ports are
replaced with the test servers': 8000 (HTTP) and 50051 (gRPC) of the
embedded model's server, 8001 (HTTP) of the geotiff model's.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.http.conftest import ROOT, HttpServer

START, END = "<!-- http:start -->", "<!-- http:end -->"
BIN = Path(sys.executable).parent


def section() -> str:
    text = (ROOT / "README.md").read_text()
    assert START in text and END in text, "README.md has no HTTP section markers"
    return text.split(START, 1)[1].split(END, 1)[0]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), re.DOTALL)


def localize(command: str, http: HttpServer, geotiff: HttpServer) -> str:
    command = command.replace("localhost:8000", f"127.0.0.1:{http.http_port}")
    command = command.replace("localhost:8001", f"127.0.0.1:{geotiff.http_port}")
    command = command.replace("localhost:50051", http.grpc_address)
    command = command.replace(".venv/bin/", f"{BIN}/").replace(" plugins/", f" {ROOT}/plugins/")
    return command


def run(command: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-c", f"set -euo pipefail; {command}"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def test_readme_commands(http_server: HttpServer, geotiff_http_server: HttpServer, tmp_path: Path):
    commands = [line.strip() for block in blocks("bash") for line in block.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert len(commands) >= 8
    seen = set()
    for command in commands:
        out = run(localize(command, http_server, geotiff_http_server), tmp_path)
        if "/v1/embeddings" in command:
            body = json.loads(out)
            assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 384
        elif "/pooling/stream" in command:
            events = [json.loads(line) for line in out.splitlines()]
            assert events[0]["event"] == "progress" and events[-1]["event"] == "result"
        elif "localhost:8001/pooling" in command:
            mask = json.loads((tmp_path / "mask.json").read_text())["data"]
            assert base64.b64decode(mask["data"]).startswith(b"\x89PNG") and mask["width"] == 256
        elif "/pooling" in command:
            assert len(json.loads(out)["data"]["similarity"]) == 3
        elif "/embed" in command:
            assert len(json.loads(out)[0]) == 384
        elif "/rerank" in command:
            assert json.loads(out)["results"][0]["index"] == 0  # the kitten first
        elif "/info" in command:
            assert json.loads(out)["model_id"] == "all-MiniLM-L6-v2"
        elif "tei.v1.Embed/Embed" in command:
            assert len(json.loads(out)["embeddings"]) == 384
        else:
            continue
        seen.add(command.split()[-1] if "grpcurl" in command else re.search(r"localhost:\d+\S*", command)[0])
    assert len(seen) >= 8, seen


def test_readme_openai_snippet(http_server: HttpServer, tmp_path: Path):
    [snippet] = blocks("python")
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("localhost:8000", f"127.0.0.1:{http_server.http_port}"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    count, dim, tokens = out.stdout.split()
    assert (count, dim) == ("2", "384") and int(tokens) > 10
