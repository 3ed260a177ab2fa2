"""Issue 6: the Go and Node example programs and the Python CLI against a live server.

Each program calls GetServerInfo, Encode and ProcessStream (typed payload) and
prints JSON lines; their embeddings must equal the Python client's to 1e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.clients.helpers import BIN, GO_CLIENT, GO_LATENCY, NODE_CLIENT, json_lines, run

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map sentences to vectors.",
    "héllo wörld ✓",
]
TEXT_EMBEDDING_RESPONSE = "type.googleapis.com/poolstream.payloads.text_embedding.v1.TextEmbeddingResponse"


@pytest.fixture(scope="module")
def reference(py_client) -> np.ndarray:
    """The Python client's embeddings of TEXTS (Encode)."""
    return py_client.embed(TEXTS).astype(np.float64)


def program(name: str) -> list[str]:
    return [str(GO_CLIENT)] if name == "go" else ["node", str(NODE_CLIENT)]


@pytest.mark.parametrize("name", ["go", "node"])
def test_example_program(name, client_programs, address, reference):
    out = run([*program(name), "--addr", address, *TEXTS], timeout=180)
    records = json_lines(out.stdout)
    kinds = [r["kind"] for r in records]

    info = next(r["info"] for r in records if r["kind"] == "server_info")
    assert info["plugin"]["name"] == "text_embedding"
    assert info["model"]["outputShape"] in ([384], ["384"])

    encoded = {r["index"]: r for r in records if r["kind"] == "encode"}
    assert sorted(encoded) == [0, 1, 2]
    for i, text in enumerate(TEXTS):
        assert encoded[i]["text"] == text and encoded[i]["shape"] in ([384], ["384"])
        np.testing.assert_allclose(encoded[i]["embedding"], reference[i], atol=1e-6, rtol=0)

    chunks = [r for r in records if r["kind"] == "process_chunk"]
    assert chunks and {c["total"] for c in chunks} == {3} and max(c["completed"] for c in chunks) == 3
    result = records[-1]
    assert result["kind"] == "process_result" and kinds.count("process_result") == 1
    assert result["type_url"] == TEXT_EMBEDDING_RESPONSE
    assert result["shape"] in ([3, 384], ["3", "384"])
    np.testing.assert_allclose(result["embeddings"], reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(result["similarity"], reference @ reference.T, atol=1e-5)
    assert result["prompt_count"] == 3


@pytest.mark.parametrize("name", ["go", "node"])
def test_example_program_fails_without_server(name, client_programs):
    done = run([*program(name), "--addr", "127.0.0.1:1", "--timeout", "3", "x"], check=False, timeout=60)
    assert done.returncode != 0
    assert "poolstream-" in done.stderr


def test_go_and_node_agree(client_programs, address):
    outs = {}
    for name in ("go", "node"):
        records = json_lines(run([*program(name), "--addr", address, "--skip-process", TEXTS[0]]).stdout)
        outs[name] = next(r["embedding"] for r in records if r["kind"] == "encode")
    np.testing.assert_allclose(outs["go"], outs["node"], atol=1e-6, rtol=0)


# --- the Python CLI ---------------------------------------------------------

CLI = str(BIN / "poolstream-client")


def test_cli_info(address):
    info = json.loads(run([CLI, "--addr", address, "info"]).stdout)
    assert info["plugin"]["name"] == "text_embedding"
    assert "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest" in info["plugin"]["input_types"]


def test_cli_encode(address, reference):
    records = json_lines(run([CLI, "--addr", address, "encode", *TEXTS]).stdout)
    by_index = {r["index"]: r for r in records}
    assert sorted(by_index) == [0, 1, 2]
    for i, text in enumerate(TEXTS):
        assert by_index[i]["text"] == text and by_index[i]["dtype"] == "DTYPE_FLOAT32"
        np.testing.assert_allclose(by_index[i]["embedding"], reference[i], atol=1e-6, rtol=0)
    binary = json_lines(run([CLI, "--addr", address, "encode", "--dtype", "binary", TEXTS[0]]).stdout)[0]
    assert binary["dtype"] == "DTYPE_BINARY"
    np.testing.assert_array_equal(binary["embedding"], (reference[0] > 0).astype(int))


def test_cli_process_typed_with_progress(address, reference, tmp_path):
    src, out = tmp_path / "request.json", tmp_path / "result.json"
    src.write_text(
        json.dumps(
            {
                "@type": "type.googleapis.com/poolstream.payloads.text_embedding.v1.TextEmbeddingRequest",
                "texts": TEXTS,
                "similarity": True,
            }
        )
    )
    done = run(
        [CLI, "--addr", address, "process", "--plugin-input", str(src), "--out", str(out), "--decode-tensors",
         "--progress"]  # forced: stderr is a pipe here, where the bar is off by default
    )
    summary = json.loads(done.stdout)
    assert summary["kind"] == "typed" and summary["type"] == TEXT_EMBEDDING_RESPONSE
    assert summary["prompt_count"] == 3 and summary["out"] == str(out)
    assert "3/3" in done.stderr  # the progress bar (tqdm)
    result = json.loads(out.read_text())
    assert result["@type"] == TEXT_EMBEDDING_RESPONSE
    assert result["embeddings"]["shape"] == [3, 384]
    np.testing.assert_allclose(result["embeddings"]["values"], reference, atol=1e-6, rtol=0)
    np.testing.assert_allclose(result["similarity"]["values"], reference @ reference.T, atol=1e-5)


def test_cli_process_json_and_type_flag(address, reference, tmp_path):
    src = tmp_path / "request.json"
    src.write_text(json.dumps({"texts": TEXTS[:2]}))
    # Plain JSON: sent as PluginPayload.json, answered in JSON.
    out = tmp_path / "json.json"
    summary = json.loads(
        run(
            [
                CLI,
                "--addr",
                address,
                "process",
                "--plugin-input",
                str(src),
                "--out",
                str(out),
                "--detail",
                "chunks",
            ]
        ).stdout
    )
    assert summary["kind"] == "json"
    assert "embeddings" in json.loads(out.read_text())
    # The same JSON as a typed message (--type), through unary Process, to stdout.
    result = json.loads(
        run(
            [
                CLI,
                "--addr",
                address,
                "process",
                "--plugin-input",
                str(src),
                "--unary",
                "--type",
                "poolstream.payloads.text_embedding.v1.TextEmbeddingRequest",
                "--decode-tensors",
            ]
        ).stdout
    )
    assert result["@type"] == TEXT_EMBEDDING_RESPONSE
    np.testing.assert_allclose(result["embeddings"]["values"], reference[:2], atol=1e-6, rtol=0)


def test_cli_reports_errors(address, tmp_path):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps({"no_texts_here": 1}))
    done = run([CLI, "--addr", address, "process", "--plugin-input", str(src), "--no-progress"], check=False)
    assert done.returncode == 1 and "INVALID_ARGUMENT" in done.stderr


def test_go_latency_probe(client_programs, address):
    """The Go latency probe that bench/bench_text.py runs: one figure per text and
    kind, and the server's inference-time trailer read from Go."""
    out = run([str(GO_LATENCY), "--addr", address, "--warmup", "1"], input="\n".join(TEXTS), timeout=120)
    figures = json.loads(out.stdout)
    assert set(figures) == {"result_ms", "closed_ms", "unary_ms", "rtt_ms", "inference_ms", "unary_inference_ms"}
    assert all(len(v) == len(TEXTS) for v in figures.values())
    for result, closed, inference in zip(figures["result_ms"], figures["closed_ms"], figures["inference_ms"]):
        assert 0 < inference < result <= closed
    assert all(0 < x < u for x, u in zip(figures["unary_inference_ms"], figures["unary_ms"]))
