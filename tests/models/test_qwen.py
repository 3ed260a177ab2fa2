"""Qwen3 / Qwen2 decoders as embedders (Qwen3-Embedding, gte-Qwen2) and scorers, against the references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poolstream.models.qwen import QwenEmbeddingModel
from tests.models.parity import TOL, encode_pairs, engine_outputs, load_native, max_diff, st_embed
from tests.models.tiny import TEXTS, init_weights, save_model_dir, template, train_tokenizer

# Qwen/Qwen3-Embedding-0.6B's config.json, shrunk (hidden 1024 -> 64, 28 -> 2 layers, vocab); head_dim
# stays explicit and larger than hidden / heads, as in the real model (128 vs 1024 / 16 = 64).
QWEN3_EMBEDDING = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "head_dim": 32, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
    "intermediate_size": 192, "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
    "use_cache": True, "use_sliding_window": False,
}
# Alibaba-NLP/gte-Qwen2-1.5B-instruct's config.json, shrunk: Qwen2 (q/k/v biases, no q/k norm).
GTE_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 64,
    "initializer_range": 0.02, "intermediate_size": 160, "max_position_embeddings": 131072,
    "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
    "tie_word_embeddings": False, "use_cache": True, "use_sliding_window": False,
}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPTS = {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
           "document": ""}


def qwen_tokenizer():
    tok = train_tokenizer("bytelevel", SPECIALS)
    # As Qwen3-Embedding's tokenizer.json: every sequence ends with <|endoftext|>, the token pooled.
    template(tok, "$A <|endoftext|>", "$A <|endoftext|> $B:1 <|endoftext|>:1", ["<|endoftext|>"])
    return tok


def build(cls_name: str, cfg_cls: str, raw: dict, tok, seed: int, **extra):
    import transformers

    cfg = {k: v for k, v in raw.items() if k not in ("architectures", "model_type")}
    extra.setdefault("pad_token_id", tok.token_to_id("<|endoftext|>"))
    config = getattr(transformers, cfg_cls)(**{**cfg, "vocab_size": tok.get_vocab_size(), **extra})
    torch.manual_seed(seed)
    return init_weights(getattr(transformers, cls_name)(config), seed=seed)


TOKENIZER_KWARGS = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "padding_side": "left"}


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory) -> Path:
    tok = qwen_tokenizer()
    model = build("Qwen3Model", "Qwen3Config", QWEN3_EMBEDDING, tok, 0)
    return save_model_dir(tmp_path_factory.mktemp("qwen3"), model, tok, architecture="Qwen3ForCausalLM",
                          pooling="last", max_seq_length=24, tokenizer_kwargs=TOKENIZER_KWARGS, prompts=PROMPTS)


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory) -> Path:
    tok = qwen_tokenizer()
    model = build("Qwen2Model", "Qwen2Config", GTE_QWEN2, tok, 2)
    return save_model_dir(tmp_path_factory.mktemp("qwen2"), model, tok, architecture="Qwen2ForCausalLM",
                          pooling="last", max_seq_length=24,
                          tokenizer_kwargs={**TOKENIZER_KWARGS, "padding_side": "right"})


async def test_qwen3_embedding_matches_sentence_transformers(qwen3_dir):
    """ST pads on the left (the model's tokenizer_config), poolstream on the right: same vectors."""
    ours, outs = await engine_outputs(qwen3_dir, TEXTS)
    assert max_diff(ours, st_embed(qwen3_dir, TEXTS)) < TOL
    assert any(o.truncated for o in outs) and max(len(o.prompt_token_ids) for o in outs) == 24


async def test_qwen2_embedding_matches_sentence_transformers(qwen2_dir):
    ours, _ = await engine_outputs(qwen2_dir, TEXTS)
    assert max_diff(ours, st_embed(qwen2_dir, TEXTS)) < TOL


def test_loaded_natively(qwen3_dir):
    model = load_native(qwen3_dir)
    assert isinstance(model, QwenEmbeddingModel) and model._scripted is not None
    spec = model.spec()
    assert spec.output_shape == (64,) and spec.pooling == "last" and spec.normalize and spec.max_model_len == 24


def test_left_and_right_padding_agree(qwen3_dir):
    """Masks padded on either side give the same pooled vectors (positions count real tokens)."""
    model = load_native(qwen3_dir)
    ids, mask = encode_pairs(qwen3_dir, [(t, "") for t in TEXTS[:4]], 24)  # just a padded batch
    lens = mask.sum(1)
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for i, n in enumerate(lens.tolist()):
        left_ids[i, ids.shape[1] - n:] = ids[i, :n]
        left_mask[i, ids.shape[1] - n:] = 1
    with torch.inference_mode():
        right = model.forward_tokens(ids, mask)
        left = model.forward_tokens(left_ids, left_mask)
        model._scripted = None  # eager and packed/padded paths agree too
        eager_left = model.forward_tokens(left_ids, left_mask)
        alone = torch.stack([model.forward_tokens(ids[i:i + 1, :n], mask[i:i + 1, :n])[0]
                             for i, n in enumerate(lens.tolist())])
    assert max_diff(left, right) < TOL and max_diff(eager_left, right) < TOL and max_diff(alone, right) < TOL
