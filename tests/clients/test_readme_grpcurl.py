"""Issue 6: every command of the README's "Debugging with grpcurl" section runs
against a live server and prints what it should.

The commands come from README.md between `<!-- grpcurl:start -->` and
`<!-- grpcurl:end -->` (the only copy: the stale clients/README_grpcurl.md was
removed). The README's address (127.0.0.1:50051) is replaced with the test
server's.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.clients.helpers import README_ADDR, ROOT, json_documents, run

START, END = "<!-- grpcurl:start -->", "<!-- grpcurl:end -->"
REQUEST_TYPE = "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest"
RESPONSE_TYPE = "poolstream.payloads.text_embedding.v1.TextEmbeddingResponse"


def section() -> tuple[Path, str]:
    readme = ROOT / "README.md"
    text = readme.read_text()
    assert START in text and END in text, "README.md lost its grpcurl section markers"
    return readme, text.split(START, 1)[1].split(END, 1)[0]


def commands(markdown: str) -> list[str]:
    """Shell commands of the ```bash/```sh/```console blocks (continuations joined)."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", markdown, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                out.append(line)
    return out


SOURCE, SECTION = section()
COMMANDS = commands(SECTION)


def _get(d: dict, *names: str) -> Any:
    """A protobuf-JSON field by its camelCase or snake_case name."""
    for n in names:
        if n in d:
            return d[n]
    raise KeyError(f"none of {names} in {sorted(d)}")


def _floats(tensor: dict) -> np.ndarray:
    shape = [int(s) for s in tensor["shape"]]
    if tensor.get("data"):
        assert tensor["dtype"] == "DTYPE_FLOAT32", tensor["dtype"]
        return np.frombuffer(base64.b64decode(tensor["data"]), "<f4").reshape(shape)
    return np.asarray(_get(tensor, "floatValues", "float_values"), dtype=np.float32).reshape(shape)


def _request(cmd: str) -> dict:
    args = shlex.split(cmd)
    return json.loads(args[args.index("-d") + 1]) if "-d" in args else {}


# --- per-command checks: (name, pattern on the command, check(stdout, cmd, ctx)) ---


def check_list_services(out: str, cmd: str, ctx) -> None:
    services = set(out.split())
    assert {"poolstream.v1.PoolingService", "grpc.health.v1.Health"} <= services, services
    assert any(s.startswith("grpc.reflection.") for s in services), services


def check_list_methods(out: str, cmd: str, ctx) -> None:
    for m in ("Process", "ProcessStream", "Encode", "EncodeAll", "GetServerInfo"):
        assert f"poolstream.v1.PoolingService.{m}" in out.split(), out


def check_describe_service(out: str, cmd: str, ctx) -> None:
    assert "is a service" in out and "rpc ProcessStream" in out and "rpc Encode" in out, out


def check_describe_message(out: str, cmd: str, ctx) -> None:
    assert "is a message" in out, out
    if REQUEST_TYPE in cmd:
        assert "repeated string texts" in out and "bool similarity" in out, out


def check_health(out: str, cmd: str, ctx) -> None:
    assert json.loads(out) == {"status": "SERVING"}


def check_server_info(out: str, cmd: str, ctx) -> None:
    info = json.loads(out)
    assert info["plugin"]["name"] == "text_embedding"
    assert REQUEST_TYPE in _get(info["plugin"], "inputTypes", "input_types")
    assert [int(s) for s in _get(info["model"], "outputShape", "output_shape")] == [384]


def check_encode(out: str, cmd: str, ctx) -> None:
    texts = [p["text"] for p in _request(cmd)["prompts"]]
    docs = json_documents(out)
    assert len(docs) == len(texts), out[:2000]
    reference = ctx.embed(texts)
    for doc in docs:
        index = int(doc.get("index", 0))
        tensor = doc["output"]["outputs"]["data"]
        assert [int(s) for s in tensor["shape"]] == [384]
        np.testing.assert_allclose(_floats(tensor), reference[index], atol=1e-6, rtol=0)
        if _get(_request(cmd)["params"], "include_float_values", "includeFloatValues"):
            floats = np.asarray(_get(tensor, "floatValues", "float_values"), dtype=np.float32)
            np.testing.assert_allclose(floats, reference[index], atol=1e-6, rtol=0)


def check_encode_all(out: str, cmd: str, ctx) -> None:
    request = _request(cmd)
    texts = [p["text"] for p in request["prompts"]]
    dims = int(request["params"]["dimensions"])
    [doc] = json_documents(out)
    results = doc["results"]
    assert len(results) == len(texts), out[:2000]
    # Matryoshka: the first `dims` values, normalised again.
    reference = ctx.embed(texts)[:, :dims]
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    for i, result in enumerate(results):
        assert int(result.get("index", 0)) == i  # prompt order
        tensor = result["output"]["outputs"]["data"]
        assert [int(s) for s in tensor["shape"]] == [dims]
        np.testing.assert_allclose(_floats(tensor), reference[i], atol=1e-5, rtol=0)
        floats = np.asarray(_get(tensor, "floatValues", "float_values"), dtype=np.float32)
        np.testing.assert_allclose(floats, reference[i], atol=1e-5, rtol=0)


def _check_result(result: dict, request: dict, ctx) -> None:
    payload = request["data"]
    texts = (payload.get("json") or payload.get("typed"))["texts"]
    data = result["data"]
    if "typed" in payload:
        typed = data["typed"]
        assert typed["@type"] == f"type.googleapis.com/{RESPONSE_TYPE}", typed.get("@type")
        emb = _floats(typed["embeddings"])
        assert emb.shape == (len(texts), 384)
        np.testing.assert_allclose(emb, ctx.embed(texts), atol=1e-6, rtol=0)
        if payload["typed"].get("similarity"):
            np.testing.assert_allclose(_floats(typed["similarity"]), emb @ emb.T, atol=1e-5)
    else:
        assert "json" in data, sorted(data)
        assert "embeddings" in data["json"], sorted(data["json"])
        if isinstance(data["json"]["embeddings"], list):  # the plugin's JSON form: nested lists
            np.testing.assert_allclose(data["json"]["embeddings"], ctx.embed(texts), atol=1e-6, rtol=0)
        if payload["json"].get("similarity"):
            assert "similarity" in data["json"]
    usage = result.get("usage", {})
    assert int(_get(usage, "promptCount", "prompt_count")) == len(texts)


def check_process(out: str, cmd: str, ctx) -> None:
    _check_result(json.loads(out), _request(cmd), ctx)


def check_process_stream(out: str, cmd: str, ctx) -> None:
    request = _request(cmd)
    docs = json_documents(out)
    assert "result" in docs[-1] and all("result" not in d for d in docs[:-1]), out[:2000]
    events = [d.get("progress") or d.get("chunk") for d in docs[:-1]]
    assert events and all(e is not None for e in events), docs[:-1]
    texts = (request["data"].get("json") or request["data"].get("typed"))["texts"]
    assert {int(e["total"]) for e in events} == {len(texts)}
    assert max(int(e.get("completed", 0)) for e in events) == len(texts)
    _check_result(docs[-1]["result"], request, ctx)


CHECKS: list[tuple[str, str, Callable[[str, str, Any], None]]] = [
    ("list services", r"^(grpcurl .* list|buf curl .*--list-services .*)$", check_list_services),
    ("list methods", r"^grpcurl .* list poolstream\.v1\.PoolingService$", check_list_methods),
    ("describe service", r"^grpcurl .* describe poolstream\.v1\.PoolingService$", check_describe_service),
    ("describe message", r"^grpcurl .* describe [\w.]+$", check_describe_message),
    ("health", r"grpc\.health\.v1\.Health/Check$", check_health),
    ("GetServerInfo", r"PoolingService/GetServerInfo$", check_server_info),
    ("Encode", r"PoolingService/Encode$", check_encode),
    ("EncodeAll", r"PoolingService/EncodeAll$", check_encode_all),
    ("Process", r"PoolingService/Process$", check_process),
    ("ProcessStream", r"PoolingService/ProcessStream$", check_process_stream),
]


def classify(cmd: str) -> tuple[str, Callable]:
    for name, pattern, check in CHECKS:
        if re.search(pattern, cmd):
            return name, check
    raise AssertionError(f"no output check for README command (add one to {__file__}): {cmd}")


class Context:
    def __init__(self, py_client):
        self.client = py_client

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.client.embed(texts)


def test_readme_section_has_every_kind_of_command():
    assert COMMANDS, f"no commands found in {SOURCE}"
    kinds = [classify(c)[0] for c in COMMANDS]
    for kind in (
        "list services",
        "describe message",
        "health",
        "GetServerInfo",
        "Encode",
        "EncodeAll",
        "Process",
        "ProcessStream",
    ):
        assert kind in kinds, f"{SOURCE}: no {kind} command"
    assert all(README_ADDR in c for c in COMMANDS), "every command must use the README address"
    process = [c for c in COMMANDS if classify(c)[0] == "Process" and c.startswith("grpcurl")]
    payloads = {next(iter(_request(c)["data"])) for c in process}
    assert payloads == {"json", "typed"}, "grpcurl Process with a JSON and with a typed (@type) payload"
    assert any(f'"@type": "type.googleapis.com/{REQUEST_TYPE}"' in c for c in process)
    assert any(c.startswith("buf curl") for c in COMMANDS), "a buf curl equivalent"


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"{i:02d}-{classify(c)[0]}" for i, c in enumerate(COMMANDS)])
def test_readme_command(cmd, address, py_client):
    _, check = classify(cmd)
    live = cmd.replace(README_ADDR, address)
    done = run(live, timeout=120)
    check(done.stdout, cmd, Context(py_client))
