"""ModernBERT (gte-modernbert, modernbert-embed) and its classifier head against the references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poolstream.models.modernbert import ModernBertEmbeddingModel
from tests.models.parity import TOL, encode_pairs, engine_outputs, load_native, max_diff, st_embed
from tests.models.tiny import TEXTS, init_weights, save_model_dir, template, train_tokenizer

# answerdotai/ModernBERT-base's config.json, shrunk: hidden 768 -> 64, 22 -> 4 layers (global attention in
# layers 0 and 3, as every 3rd), intermediate, vocab, and the local window 128 -> 8 tokens so that the
# short test prompts really run sliding-window attention.
MODERNBERT_BASE = {
    "architectures": ["ModernBertForMaskedLM"], "attention_bias": False, "attention_dropout": 0.0,
    "classifier_activation": "gelu", "classifier_bias": False, "classifier_dropout": 0.0,
    "classifier_pooling": "mean", "decoder_bias": True, "deterministic_flash_attn": False,
    "embedding_dropout": 0.0, "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0,
    "hidden_activation": "gelu", "hidden_size": 64, "initializer_cutoff_factor": 2.0, "initializer_range": 0.02,
    "intermediate_size": 96, "layer_norm_eps": 1e-05, "local_attention": 8, "local_rope_theta": 10000.0,
    "max_position_embeddings": 8192, "mlp_bias": False, "mlp_dropout": 0.0, "model_type": "modernbert",
    "norm_bias": False, "norm_eps": 1e-05, "num_attention_heads": 4, "num_hidden_layers": 4,
}
SPECIALS = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"]
TOKENIZER_KWARGS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                    "mask_token": "[MASK]"}


def modernbert_tokenizer():
    tok = train_tokenizer("bytelevel", SPECIALS)
    template(tok, "[CLS] $A [SEP]", "[CLS] $A [SEP] $B [SEP]", ["[CLS]", "[SEP]"])
    return tok


def build(cls_name: str, tok, seed: int, **extra):
    import transformers

    cfg = {k: v for k, v in MODERNBERT_BASE.items() if k not in ("architectures", "model_type")}
    ids = {"cls_token_id": tok.token_to_id("[CLS]"), "bos_token_id": tok.token_to_id("[CLS]"),
           "sep_token_id": tok.token_to_id("[SEP]"), "eos_token_id": tok.token_to_id("[SEP]"),
           "pad_token_id": tok.token_to_id("[PAD]")}
    config = transformers.ModernBertConfig(**{**cfg, **ids, "vocab_size": tok.get_vocab_size(), **extra})
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return init_weights(getattr(transformers, cls_name)(config), seed=seed)


@pytest.fixture(scope="module")
def modernbert_dir(tmp_path_factory) -> Path:
    tok = modernbert_tokenizer()
    return save_model_dir(tmp_path_factory.mktemp("modernbert"), build("ModernBertModel", tok, 0), tok,
                          pooling="mean", max_seq_length=40, tokenizer_kwargs=TOKENIZER_KWARGS)


async def test_embeddings_match_sentence_transformers(modernbert_dir):
    ours, outs = await engine_outputs(modernbert_dir, TEXTS)
    assert max_diff(ours, st_embed(modernbert_dir, TEXTS)) < TOL
    assert any(o.truncated for o in outs)


def test_loaded_natively(modernbert_dir):
    model = load_native(modernbert_dir)
    assert isinstance(model, ModernBertEmbeddingModel) and model._scripted is not None
    assert [layer.local for layer in model.body.layers] == [False, True, True, False]
    assert model.spec().max_model_len == 40


def test_padded_and_alone_agree(modernbert_dir):
    """A prompt in a padded (packed) batch gets exactly what it gets alone, also under the window."""
    model = load_native(modernbert_dir)
    ids, mask = encode_pairs(modernbert_dir, [(t, "") for t in TEXTS], 40)
    with torch.inference_mode():
        batch = model.forward_tokens(ids, mask)
        alone = torch.stack([model.forward_tokens(ids[i:i + 1, :n], mask[i:i + 1, :n])[0]
                             for i, n in enumerate(mask.sum(1).tolist())])
    assert max_diff(batch, alone) < TOL
