"""XLM-RoBERTa (multilingual-e5, bge-m3) and its cross-encoder head (bge-reranker) against the references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poolstream.models.xlm_roberta import XLMRobertaEmbeddingModel
from tests.models.parity import TOL, engine_outputs, load_native, max_diff, st_embed
from tests.models.tiny import TEXTS, init_weights, save_model_dir, template, train_tokenizer

# intfloat/multilingual-e5-small's config.json, shrunk (hidden 384 -> 64, 12 -> 2 layers, vocab).
E5_SMALL = {
    "architectures": ["XLMRobertaModel"], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 64,
    "initializer_range": 0.02, "intermediate_size": 256, "layer_norm_eps": 1e-12, "max_position_embeddings": 514,
    "model_type": "xlm-roberta", "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 1,
    "position_embedding_type": "absolute", "type_vocab_size": 1,
}
# BAAI/bge-reranker-base's config.json (XLMRobertaForSequenceClassification), shrunk.
BGE_RERANKER = {**E5_SMALL, "architectures": ["XLMRobertaForSequenceClassification"], "layer_norm_eps": 1e-05,
                "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TOKENIZER_KWARGS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                    "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}


def xlmr_tokenizer():
    tok = train_tokenizer("unigram", SPECIALS)
    template(tok, "<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"])
    return tok


def hf_config(cls_name: str, raw: dict, vocab: int):
    import transformers

    cfg = {k: v for k, v in raw.items() if k not in ("architectures", "model_type")}
    return getattr(transformers, cls_name)(**{**cfg, "vocab_size": vocab})


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory) -> Path:
    from transformers import XLMRobertaModel

    tok = xlmr_tokenizer()
    torch.manual_seed(0)
    model = init_weights(XLMRobertaModel(hf_config("XLMRobertaConfig", E5_SMALL, tok.get_vocab_size()),
                                         add_pooling_layer=True))
    return save_model_dir(tmp_path_factory.mktemp("e5"), model, tok, pooling="mean",
                          tokenizer_kwargs=TOKENIZER_KWARGS)


async def test_embeddings_match_sentence_transformers(e5_dir):
    ours, outs = await engine_outputs(e5_dir, TEXTS)
    assert max_diff(ours, st_embed(e5_dir, TEXTS)) < TOL
    assert any(o.truncated for o in outs)  # the long text really was cut at max_seq_length
    assert max(len(o.prompt_token_ids) for o in outs) == 32


def test_loaded_natively_with_positions_offset(e5_dir):
    model = load_native(e5_dir)
    assert isinstance(model, XLMRobertaEmbeddingModel)
    assert model._scripted is not None  # runs as TorchScript
    spec = model.spec()
    assert spec.output_shape == (64,) and spec.pooling == "mean" and spec.normalize
    assert spec.max_model_len == 32
    # Positions start at padding_idx + 1: the table seen by the encoder skips rows 0 and 1.
    assert model.body.pos_type.shape[0] == 514 - 2
