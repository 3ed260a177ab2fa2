"""``--model ORG/NAME`` through a real Hugging Face cache layout built in tmp (no hub here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from poolstream.config import default_model_path
from poolstream.model_resolution import resolve_model
from poolstream.v1 import pooling_pb2 as ppb
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import launch_server, poolstream_command, subprocess_env

from .builders import build_bert
from .hf_cache import populate_hf_cache


def test_resolve_finds_snapshots_by_name_and_revision(tmp_path):
    cache = tmp_path / "hub"
    main = populate_hf_cache(cache, "sentence-transformers/all-MiniLM-L6-v2", Path(default_model_path()))
    tiny = build_bert(tmp_path / "tiny", "BertModel")
    tagged = populate_hf_cache(cache, "sentence-transformers/all-MiniLM-L6-v2", tiny, revision="v2")
    got = resolve_model("sentence-transformers/all-MiniLM-L6-v2", cache_dir=cache)
    assert got.path == main and got.repo_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert (got.path / "config.json").is_file() and (got.path / "1_Pooling" / "config.json").is_file()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2", cache_dir=cache, revision="v2").path == tagged
    # a directory wins over a name, and is not looked up
    assert resolve_model(tiny).path == tiny and resolve_model(tiny).repo_id is None


def test_missing_name_names_the_directory_it_looked_in(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        resolve_model("BAAI/bge-small-en-v1.5", cache_dir=cache)
    assert str(cache / "models--BAAI--bge-small-en-v1.5") in str(e.value)
    assert "--allow-download" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(FileNotFoundError, match="neither a model directory nor a Hugging Face repo id"):
        resolve_model("bad name!/x")


async def test_serve_by_name_from_the_cache(tmp_path):
    home = tmp_path / "hf-home"
    reranker = build_bert(tmp_path / "rerank", "BertForSequenceClassification", num_labels=1)
    populate_hf_cache(home / "hub", "poolstream-test/tiny-reranker", reranker)
    # HF_HOME only: huggingface_hub derives the cache (HF_HOME/hub) the way users set it up.
    env = subprocess_env(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    server = launch_server("--model", "poolstream-test/tiny-reranker", env=env)
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.PoolingServiceStub(ch)
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            resp = await stub.Rerank(pb.RerankRequest(query="what is a panda?", documents=["a bear", "a city"]))
    finally:
        server.stop()
    assert info.model.name == "poolstream-test/tiny-reranker"
    assert "/models--poolstream-test--tiny-reranker/snapshots/" in info.model.path
    assert info.model.default_task == ppb.POOLING_TASK_CLASSIFY
    assert sorted(r.index for r in resp.results) == [0, 1] and resp.method == "cross_encoder"


def test_serve_unknown_name_fails_with_the_cache_path(tmp_path):
    env = subprocess_env(HF_HUB_CACHE=str(tmp_path / "empty-cache"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([*poolstream_command(), "serve", "--port", "0", "--model", "BAAI/bge-small-en-v1.5"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert str(tmp_path / "empty-cache" / "models--BAAI--bge-small-en-v1.5") in out, out
