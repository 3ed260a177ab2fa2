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
from tests.models import (
    test_architecture_tasks, test_modernbert, test_mpnet, test_qwen, test_rotary_bert, test_xlm_roberta,
)
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


def _nomic(path: Path) -> Path:
    return test_rotary_bert.to_original_layout("nomic", test_rotary_bert.build("nomic", "NomicBertModel", path)[0],
                                               path.with_name(path.name + "-orig"))


def _gte(path: Path) -> Path:
    return test_rotary_bert.to_original_layout("gte", test_rotary_bert.build("gte", "GteModel", path)[0],
                                               path.with_name(path.name + "-orig"))


# config.json architectures -> builder; Nomic and GTE as the published checkpoints store them.
BUILDERS = {"XLMRobertaModel": _e5, "MPNetForMaskedLM": _mpnet, "Qwen3ForCausalLM": _qwen3,
            "ModernBertModel": _modernbert, "NomicBertModel": _nomic, "NewModel": _gte}


async def serve_and_encode(path: Path, prompts: list[pooling_pb2.Prompt]) -> tuple[str, torch.Tensor]:
    """(GetServerInfo's architecture, the Encode outputs in prompt order) from a real server."""
    async with inproc_server(str(path), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.PoolingServiceStub(channel)
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            results = [r async for r in stub.Encode(pb.EncodeRequest(prompts=prompts))]
    rows = {}
    for r in results:
        t = r.output.outputs.data
        rows[r.index] = np.frombuffer(t.data, "<f4").reshape(list(t.shape))
    return info.model.architecture, torch.from_numpy(np.stack([rows[i] for i in range(len(prompts))]))


@pytest.mark.parametrize("architecture", sorted(BUILDERS))
async def test_encode_over_grpc_matches_sentence_transformers(tmp_path, architecture):
    path = BUILDERS[architecture](tmp_path / architecture)
    served, ours = await serve_and_encode(path, [pooling_pb2.Prompt(text=t) for t in TEXTS])
    assert served == architecture
    # Nomic / GTE: the reference reads the transformers-layout twin of the same weights.
    ref_path = path.with_name(path.name.removesuffix("-orig")) if path.name.endswith("-orig") else path
    assert (ours - st_embed(ref_path, TEXTS)).abs().max().item() < TOL


@pytest.mark.parametrize("family", sorted(test_architecture_tasks.FAMILIES))
async def test_classify_over_grpc_matches_transformers(tmp_path, family):
    """A ...ForSequenceClassification model's default task is classify: Encode returns probabilities."""
    path, model = test_architecture_tasks.build(family, "ForSequenceClassification", tmp_path, num_labels=3)
    served, ours = await serve_and_encode(path, [pooling_pb2.Prompt(text=t) for t in TEXTS])
    assert served == test_architecture_tasks.FAMILIES[family].prefix + "ForSequenceClassification"
    ref = torch.stack(test_architecture_tasks.hf_alone(path, model, TEXTS)).softmax(-1)
    assert (ours - ref).abs().max().item() < TOL


@pytest.mark.parametrize("family", sorted(test_architecture_tasks.FAMILIES))
async def test_rerank_over_grpc_matches_cross_encoder(tmp_path, family):
    """score over gRPC: Rerank's sigmoid scores and ranking equal CrossEncoder.rank's."""
    from sentence_transformers import CrossEncoder

    path, _ = test_architecture_tasks.build(family, "ForSequenceClassification", tmp_path, num_labels=1)
    query, documents = test_architecture_tasks.PAIRS[0][0], [d for _, d in test_architecture_tasks.PAIRS]
    async with inproc_server(str(path), num_threads=1) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.PoolingServiceStub(channel)
            reply = await stub.Rerank(pb.RerankRequest(query=query, documents=documents))
    ce = CrossEncoder(str(path), device="cpu", max_length=test_architecture_tasks.MAX_LEN)
    ref = ce.predict([(query, d) for d in documents], convert_to_tensor=True)
    assert [r.index for r in reply.results] == ref.argsort(descending=True).tolist()
    ours = torch.tensor([r.score for r in sorted(reply.results, key=lambda r: r.index)])
    assert (ours - ref).abs().max().item() < TOL
    assert any(r.truncated for r in reply.results)  # the long document was cut to fit
