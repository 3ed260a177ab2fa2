"""MPNet (all-mpnet-base-v2) and its classifier head against the references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poolstream.models.mpnet import MPNetEmbeddingModel, relative_buckets
from tests.models.parity import TOL, engine_outputs, load_native, max_diff, st_embed
from tests.models.tiny import TEXTS, init_weights, save_model_dir, template, train_tokenizer

# sentence-transformers/all-mpnet-base-v2's config.json, shrunk (hidden 768 -> 64, 12 -> 2 layers, vocab).
# Its architectures names the pre-training class over MPNetModel weights.
ALL_MPNET = {
    "architectures": ["MPNetForMaskedLM"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 64,
    "initializer_range": 0.02, "intermediate_size": 256, "layer_norm_eps": 1e-05, "max_position_embeddings": 514,
    "model_type": "mpnet", "num_attention_heads": 4, "num_hidden_layers": 2, "pad_token_id": 1,
    "relative_attention_num_buckets": 32,
}
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TOKENIZER_KWARGS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                    "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}


def mpnet_tokenizer():
    tok = train_tokenizer("wordpiece", SPECIALS)
    template(tok, "<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"])
    return tok


def build(cls_name: str, tok, seed: int, **extra):
    import transformers

    cfg = {k: v for k, v in ALL_MPNET.items() if k not in ("architectures", "model_type")}
    config = transformers.MPNetConfig(**{**cfg, "vocab_size": tok.get_vocab_size(), **extra})
    torch.manual_seed(seed)
    return init_weights(getattr(transformers, cls_name)(config), seed=seed)


@pytest.fixture(scope="module")
def mpnet_dir(tmp_path_factory) -> Path:
    tok = mpnet_tokenizer()
    # max_seq_length 200 > 128 (max_distance): the long text reaches the logarithmic buckets' cap.
    return save_model_dir(tmp_path_factory.mktemp("mpnet"), build("MPNetModel", tok, 0), tok,
                          architecture="MPNetForMaskedLM", pooling="mean", max_seq_length=200,
                          tokenizer_kwargs=TOKENIZER_KWARGS)


async def test_embeddings_match_sentence_transformers(mpnet_dir):
    texts = TEXTS + [" ".join(["Embeddings map sentences to vectors."] * 40)]
    ours, outs = await engine_outputs(mpnet_dir, texts)
    assert max_diff(ours, st_embed(mpnet_dir, texts)) < TOL
    assert outs[-1].truncated and len(outs[-1].prompt_token_ids) == 200


def test_loaded_natively(mpnet_dir):
    model = load_native(mpnet_dir)
    assert isinstance(model, MPNetEmbeddingModel) and model._scripted is not None
    spec = model.spec()
    assert spec.output_shape == (64,) and spec.pooling == "mean" and spec.max_model_len == 200


def test_relative_buckets_match_transformers():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    s = 300
    pos = torch.arange(s)
    ref = MPNetEncoder.relative_position_bucket(pos[None, :] - pos[:, None], num_buckets=32, max_distance=128)
    assert torch.equal(relative_buckets(s, 32, 128, torch.device("cpu")), ref)
