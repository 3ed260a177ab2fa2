"""Every native architecture served over real gRPC: embeddings equal sentence-transformers',
and GetServerInfo names the architecture from config.json."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from poolstream.v1 import pooling_pb2
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc
from tests.conftest import inproc_server
from tests.models import test_modernbert, test_mpnet, test_qwen, test_xlm_roberta
from tests.models.parity import TOL, st_embed
from tests.models.tiny import TEXTS, init_weights, save_model_dir


def _e5(path: Path) -> Path:
    from transformers import XLMRobertaModel

    tok = test_xlm_roberta.xlmr_tokenizer()
    cfg = test_xlm_roberta.hf_config("XLMRobertaConfig", test_xlm_roberta.E5_SMALL, tok.get_vocab_size())
    return save_model_dir(path, init_weights(XLMRobertaModel(cfg)), tok, pooling="mean",
                          tokenizer_kwargs=test_xlm_roberta.TOKENIZER_KWARGS)


def _mpnet(path: Path) -> Path:
    tok = test_mpnet.mpnet_tokenizer()
    return save_model_dir(path, test_mpnet.build("MPNetModel", tok, 0), tok, architecture="MPNetForMaskedLM",
                          pooling="mean", tokenizer_kwargs=test_mpnet.TOKENIZER_KWARGS)


def _qwen3(path: Path) -> Path:
    tok = test_qwen.qwen_tokenizer()
    model = test_qwen.build("Qwen3Model", "Qwen3Config", test_qwen.QWEN3_EMBEDDING, tok, 0)
    return save_model_dir(path, model, tok, architecture="Qwen3ForCausalLM", pooling="last",
                          tokenizer_kwargs=test_qwen.TOKENIZER_KWARGS)


def _modernbert(path: Path) -> Path:
    tok = test_modernbert.modernbert_tokenizer()
    return save_model_dir(path, test_modernbert.build("ModernBertModel", tok, 0), tok, pooling="cls",
                          tokenizer_kwargs=test_modernbert.TOKENIZER_KWARGS)


BUILDERS = {"XLMRobertaModel": _e5, "MPNetForMaskedLM": _mpnet, "Qwen3ForCausalLM": _qwen3,
            "ModernBertModel": _modernbert}


@pytest.mark.parametrize("architecture", sorted(BUILDERS))
async def test_encode_over_grpc_matches_sentence_transformers(tmp_path, architecture):
    path = BUILDERS[architecture](tmp_path / architecture)
    async with inproc_server(str(path), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.PoolingServiceStub(channel)
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            assert info.model.architecture == architecture
            prompts = [pooling_pb2.Prompt(text=t) for t in TEXTS]
            results = [r async for r in stub.Encode(pb.EncodeRequest(prompts=prompts))]
    rows = {}
    for r in results:
        t = r.output.outputs.data
        rows[r.index] = np.frombuffer(t.data, "<f4").reshape(list(t.shape))
    ours = torch.from_numpy(np.stack([rows[i] for i in range(len(TEXTS))]))
    ref = st_embed(path, TEXTS)
    assert (ours - ref).abs().max().item() < TOL
