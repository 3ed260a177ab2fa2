"""NomicBERT (nomic-embed-text) and the new GTE (gte-*-v1.5) against the references, in both
checkpoint layouts: transformers' own, and the original remote-code one the published models ship."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from poolstream.config import default_model_path
from poolstream.models.rotary_bert import GteEmbeddingModel, NomicBertEmbeddingModel
from tests.models.parity import TOL, engine_outputs, load_native, max_diff, st_embed
from tests.models.tiny import TEXTS, init_weights, save_model_dir

# nomic-ai/nomic-embed-text-v1.5's config.json (remote-code vocabulary), shrunk: n_embd 768 -> 64,
# 12 -> 2 layers. The vocabulary is bert-base-uncased's, as the real model's (its tokenizer).
NOMIC_V15 = {
    "activation_function": "swiglu", "architectures": ["NomicBertModel"], "bos_token_id": None, "causal": False,
    "dense_seq_output": True, "embd_pdrop": 0.0, "eos_token_id": None, "fused_bias_fc": True,
    "fused_dropout_add_ln": True, "initializer_range": 0.02, "layer_norm_epsilon": 1e-12,
    "max_trained_positions": 2048, "mlp_fc1_bias": False, "mlp_fc2_bias": False, "model_type": "nomic_bert",
    "n_embd": 64, "n_head": 4, "n_inner": 128, "n_layer": 2, "n_positions": 8192, "pad_vocab_size_multiple": 64,
    "parallel_block": False, "parallel_block_tied_norm": False, "prenorm": False, "qkv_proj_bias": False,
    "reorder_and_upcast_attn": False, "resid_pdrop": 0.0, "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0,
    "rotary_emb_interleaved": False, "rotary_emb_scale_base": None, "rotary_scaling_factor": None,
    "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "type_vocab_size": 2,
    "use_flash_attn": True, "use_rms_norm": False, "use_xentropy": True, "vocab_size": 30528,
}
# Alibaba-NLP/gte-base-en-v1.5's config.json (NewModel), shrunk; no token types; rope scaling left out
# (an NTK variant that transformers does not implement either).
GTE_BASE_V15 = {
    "architectures": ["NewModel"], "attention_probs_dropout_prob": 0.0, "classifier_dropout": None,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 64, "initializer_range": 0.02,
    "intermediate_size": 128, "layer_norm_eps": 1e-12, "layer_norm_type": "layer_norm",
    "logn_attention_clip1": False, "logn_attention_scale": False, "max_position_embeddings": 8192,
    "model_type": "new", "num_attention_heads": 4, "num_hidden_layers": 2, "pack_qkv": True, "pad_token_id": 0,
    "position_embedding_type": "rope", "rope_theta": 500000, "type_vocab_size": 0, "unpad_inputs": False,
    "use_memory_efficient_attention": False, "vocab_size": 30528,
}
# As bert-base-uncased's tokenizer: token types are model inputs (pairs get type 1).
BERT_TOKENIZER_KWARGS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                         "mask_token": "[MASK]", "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}


def bert_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(default_model_path()) / "tokenizer.json"))


def nomic_config(**extra):
    from transformers import NomicBertConfig

    c = NOMIC_V15
    kwargs = dict(vocab_size=c["vocab_size"], hidden_size=c["n_embd"], num_attention_heads=c["n_head"],
                  num_hidden_layers=c["n_layer"], intermediate_size=c["n_inner"], hidden_act="silu",
                  layer_norm_eps=c["layer_norm_epsilon"], max_position_embeddings=c["n_positions"],
                  type_vocab_size=c["type_vocab_size"],
                  rope_parameters={"rope_type": "default", "rope_theta": float(c["rotary_emb_base"])})
    return NomicBertConfig(**{**kwargs, **extra})


def gte_config(**extra):
    from transformers import GteConfig

    c = GTE_BASE_V15
    keep = ("vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
            "hidden_act", "layer_norm_eps", "max_position_embeddings", "type_vocab_size", "pad_token_id")
    kwargs = {k: c[k] for k in keep}
    kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(c["rope_theta"])}
    return GteConfig(**{**kwargs, **extra})


def build(kind: str, cls_name: str, path: Path, seed: int = 0, **extra) -> tuple[Path, object]:
    import transformers

    config = nomic_config(**extra) if kind == "nomic" else gte_config(**extra)
    torch.manual_seed(seed)
    model = init_weights(getattr(transformers, cls_name)(config), seed=seed)
    return save_model_dir(path, model, bert_tokenizer(), pooling="mean", max_seq_length=32,
                          tokenizer_kwargs=BERT_TOKENIZER_KWARGS), model


def to_original_layout(kind: str, native: Path, out: Path) -> Path:
    """The same model as the published checkpoints store it (remote-code names, fused tensors,
    their config vocabulary)."""
    shutil.copytree(native, out)
    w = load_file(str(native / "model.safetensors"))
    orig = {}
    for key, t in w.items():
        if not key.startswith("layers."):
            name = key.replace("embeddings.LayerNorm", "emb_ln") if kind == "nomic" else key
            orig[name] = t
    n = len({k.split(".")[1] for k in w if k.startswith("layers.")})
    for i in range(n):
        p = f"layers.{i}."
        qkv = torch.cat([w[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        if kind == "nomic":
            o = f"encoder.layers.{i}."
            orig.update({o + "attn.Wqkv.weight": qkv, o + "attn.out_proj.weight": w[p + "self_attn.o_proj.weight"],
                         o + "mlp.fc11.weight": w[p + "mlp.up_proj.weight"],
                         o + "mlp.fc12.weight": w[p + "mlp.gate_proj.weight"],
                         o + "mlp.fc2.weight": w[p + "mlp.down_proj.weight"]})
            for ln, name in (("post_attention_layernorm", "norm1"), ("post_mlp_layernorm", "norm2")):
                orig[o + f"{name}.weight"], orig[o + f"{name}.bias"] = w[p + f"{ln}.weight"], w[p + f"{ln}.bias"]
        else:
            o = f"encoder.layer.{i}."
            orig.update({
                o + "attention.qkv_proj.weight": qkv,
                o + "attention.qkv_proj.bias": torch.cat([w[p + f"self_attn.{x}_proj.bias"] for x in "qkv"]),
                o + "attention.o_proj.weight": w[p + "self_attn.o_proj.weight"],
                o + "attention.o_proj.bias": w[p + "self_attn.o_proj.bias"],
                o + "mlp.up_gate_proj.weight": torch.cat([w[p + "mlp.up_proj.weight"], w[p + "mlp.gate_proj.weight"]]),
                o + "mlp.down_proj.weight": w[p + "mlp.down_proj.weight"],
                o + "mlp.down_proj.bias": w[p + "mlp.down_proj.bias"]})
            for ln, name in (("post_attention_layernorm", "attn_ln"), ("post_mlp_layernorm", "mlp_ln")):
                orig[o + f"{name}.weight"], orig[o + f"{name}.bias"] = w[p + f"{ln}.weight"], w[p + f"{ln}.bias"]
    save_file(orig, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(NOMIC_V15 if kind == "nomic" else GTE_BASE_V15))
    return out


@pytest.fixture(scope="module", params=["nomic", "gte"])
def native_dir(request, tmp_path_factory) -> tuple[str, Path]:
    cls_name = "NomicBertModel" if request.param == "nomic" else "GteModel"
    path, _ = build(request.param, cls_name, tmp_path_factory.mktemp(request.param))
    return request.param, path


async def test_embeddings_match_sentence_transformers(native_dir):
    kind, path = native_dir
    ours, outs = await engine_outputs(path, TEXTS)
    assert max_diff(ours, st_embed(path, TEXTS)) < TOL
    assert any(o.truncated for o in outs)


async def test_original_checkpoint_layout_gives_the_same_embeddings(native_dir, tmp_path):
    kind, path = native_dir
    orig = to_original_layout(kind, path, tmp_path / "orig")
    model = load_native(orig)
    assert type(model) is (NomicBertEmbeddingModel if kind == "nomic" else GteEmbeddingModel)
    assert model._scripted is not None
    ours, _ = await engine_outputs(orig, TEXTS)
    assert max_diff(ours, st_embed(path, TEXTS)) < TOL


def test_unsupported_variants_are_refused(native_dir, tmp_path):
    kind, path = native_dir
    orig = to_original_layout(kind, path, tmp_path / "orig")
    cfg = json.loads((orig / "config.json").read_text())
    cfg.update({"rotary_emb_interleaved": True} if kind == "nomic" else {"rope_scaling": {"type": "ntk",
                                                                                          "factor": 2.0}})
    (orig / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="interleaved" if kind == "nomic" else "rope type 'ntk'"):
        load_native(orig)
