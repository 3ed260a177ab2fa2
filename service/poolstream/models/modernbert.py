"""ModernBERT encoder (ModernBERT-base/large, gte-modernbert, modernbert-embed) and its classifier.

Pre-LayerNorm blocks without biases (by default), fused Wqkv, rotary
positions, GeGLU MLP, and attention that alternates: every
``global_attn_every_n_layers``-th layer attends globally (rotary base
``global_rope_theta``), the others within a sliding window of
``local_attention`` tokens (base ``local_rope_theta``). The first block has
no attention norm (the embedding norm precedes it); a final norm follows the
last block.

Speed: packed execution on CPU (``layers``); the sliding window is one bool
mask per batch, built only when a sequence is longer than the window, so
short batches run every layer on the same (or no) mask.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.layers import (
    SUPPORTED_ACTIVATIONS, Rotary, activation, apply_rotary, attention, frozen, key_padding_mask, layer_norm,
    packed_index, scatter_rows, token_positions,
)
from poolstream.models.text_model import ClassifierHead, NativeTextModel, Weights


def layer_types(cfg: dict[str, Any]) -> list[str]:
    """"full_attention" / "sliding_attention" per layer, from either config era."""
    n = int(cfg["num_hidden_layers"])
    types = cfg.get("layer_types")
    if types:
        return [str(t) for t in types][:n]
    every = int(cfg.get("global_attn_every_n_layers", 3))
    return ["full_attention" if i % every == 0 else "sliding_attention" for i in range(n)]


def rope_bases(cfg: dict[str, Any]) -> dict[str, float]:
    """Rotary base per layer type (``rope_parameters`` in transformers 5, else the two thetas)."""
    params = cfg.get("rope_parameters") or {}
    out = {}
    for kind, key, default in (("full_attention", "global_rope_theta", 160000.0),
                               ("sliding_attention", "local_rope_theta", 10000.0)):
        p = params.get(kind) or {}
        if p.get("rope_type", "default") != "default":
            raise ValueError(f"rope type {p.get('rope_type')!r} is not supported (only the default rotary)")
        out[kind] = float(p.get("rope_theta") or cfg.get(key) or default)
    return out


class _Layer(nn.Module):
    def __init__(self, w: dict[str, torch.Tensor], p: str, heads: int, eps: float, act: str, local: bool):
        super().__init__()
        self.attn_norm_w: Optional[torch.Tensor] = None
        self.attn_norm_b: Optional[torch.Tensor] = None
        if p + "attn_norm.weight" in w:  # absent in block 0
            self.attn_norm_w = frozen(w[p + "attn_norm.weight"])
            self.attn_norm_b = _opt(w, p + "attn_norm.bias")
        self.qkv_w = frozen(w[p + "attn.Wqkv.weight"])
        self.qkv_b = _opt(w, p + "attn.Wqkv.bias")
        self.o_w = frozen(w[p + "attn.Wo.weight"])
        self.o_b = _opt(w, p + "attn.Wo.bias")
        self.mlp_norm_w = frozen(w[p + "mlp_norm.weight"])
        self.mlp_norm_b = _opt(w, p + "mlp_norm.bias")
        self.wi_w = frozen(w[p + "mlp.Wi.weight"])
        self.wi_b = _opt(w, p + "mlp.Wi.bias")
        self.wo_w = frozen(w[p + "mlp.Wo.weight"])
        self.wo_b = _opt(w, p + "mlp.Wo.bias")
        self.heads, self.eps, self.act, self.local = heads, eps, act, local

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, b: int, s: int,
                mask: Optional[torch.Tensor], packed: Optional[torch.Tensor]) -> torch.Tensor:
        t, h = x.shape[0], x.shape[1]
        d = h // self.heads
        y = x
        w = self.attn_norm_w
        if w is not None:
            y = layer_norm(x, w, self.attn_norm_b, self.eps)
        q, k, v = F.linear(y, self.qkv_w, self.qkv_b).view(t, 3, self.heads, d).unbind(1)
        a = attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v, b, s, mask, packed, False)
        x = x + F.linear(a, self.o_w, self.o_b)
        inp, gate = F.linear(layer_norm(x, self.mlp_norm_w, self.mlp_norm_b, self.eps),
                             self.wi_w, self.wi_b).chunk(2, dim=1)
        return x + F.linear(activation(self.act, inp) * gate, self.wo_w, self.wo_b)


def _opt(w: dict[str, torch.Tensor], key: str) -> Optional[nn.Parameter]:
    return frozen(w[key]) if key in w else None


class _ModernBertEncoder(nn.Module):
    def __init__(self, w: dict[str, torch.Tensor], cfg: dict[str, Any]):
        super().__init__()
        self.hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("norm_eps", 1e-5))
        act = str(cfg.get("hidden_activation", "gelu"))
        if act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"unsupported hidden_activation {act!r}")
        self.emb = frozen(w["embeddings.tok_embeddings.weight"])
        self.emb_norm_w = frozen(w["embeddings.norm.weight"])
        self.emb_norm_b = _opt(w, "embeddings.norm.bias")
        types = layer_types(cfg)
        self.layers = nn.ModuleList([_Layer(w, f"layers.{i}.", heads, self.eps, act, kind == "sliding_attention")
                                     for i, kind in enumerate(types)])
        self.final_w = frozen(w["final_norm.weight"])
        self.final_b = _opt(w, "final_norm.bias")
        bases = rope_bases(cfg)
        head_dim = self.hidden // heads
        self.rope_global = Rotary(head_dim, bases["full_attention"])
        self.rope_local = Rotary(head_dim, bases["sliding_attention"])
        self.half_window = int(cfg.get("local_attention", 128)) // 2

    def forward(self, input_ids: torch.Tensor, key_mask: Optional[torch.Tensor], pack: bool,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids [b, s] -> [b, s, h]; no token-type table, so ``token_type_ids`` is never passed."""
        b, s, h = input_ids.shape[0], input_ids.shape[1], self.hidden
        positions = token_positions(key_mask, b, s, input_ids.device).reshape(-1)
        x = F.embedding(input_ids.reshape(-1), self.emb)
        packed: Optional[torch.Tensor] = None
        if key_mask is not None and pack:
            packed = packed_index(key_mask)
            x = x.index_select(0, packed)
            positions = positions.index_select(0, packed)
        x = layer_norm(x, self.emb_norm_w, self.emb_norm_b, self.eps)
        g_cos, g_sin = self.rope_global.cos_sin(positions, x.dtype)
        l_cos, l_sin = self.rope_local.cos_sin(positions, x.dtype)
        global_mask = key_padding_mask(key_mask)
        local_mask = global_mask
        if s > self.half_window + 1:  # else the window covers every pair
            pos = torch.arange(s, device=input_ids.device)
            window = ((pos[:, None] - pos[None, :]).abs() <= self.half_window)[None, None]
            local_mask = window if global_mask is None else window & global_mask
        for layer in self.layers:
            if layer.local:
                x = layer(x, l_cos, l_sin, b, s, local_mask, packed)
            else:
                x = layer(x, g_cos, g_sin, b, s, global_mask, packed)
        x = layer_norm(x, self.final_w, self.final_b, self.eps)
        return scatter_rows(x, packed, b * s).view(b, s, h)


class ModernBertEmbeddingModel(NativeTextModel):
    """ModernBertModel / ModernBertForSequenceClassification / ModernBertForTokenClassification."""

    anchor: ClassVar[str] = "embeddings.tok_embeddings.weight"
    family: ClassVar[str] = "ModernBERT"

    @classmethod
    def build_body(cls, weights: dict[str, torch.Tensor], hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        return _ModernBertEncoder(weights, hf_config), int(hf_config.get("max_position_embeddings") or 0)

    @classmethod
    def build_heads(cls, architecture: str, rest: Weights, body: Weights,
                    hf_config: dict[str, Any]) -> tuple[ClassifierHead | None, ClassifierHead | None]:
        """ModernBertPredictionHead (dense -> act -> LayerNorm) then ``classifier``: on the
        ``classifier_pooling`` of the tokens (sequence) or on every token (token classification)."""
        if "classifier.weight" not in rest:
            return None, None
        act = str(hf_config.get("classifier_activation", "gelu"))
        if act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"unsupported classifier_activation {act!r}")
        pooling = str(hf_config.get("classifier_pooling", "cls"))
        if pooling not in ("cls", "mean"):
            raise ValueError(f"unsupported classifier_pooling {pooling!r}")
        token = architecture.endswith("ForTokenClassification")
        head = ClassifierHead("none" if token else pooling, rest["classifier.weight"], rest.get("classifier.bias"),
                              rest["head.dense.weight"], rest.get("head.dense.bias"), act,
                              rest["head.norm.weight"], rest.get("head.norm.bias"),
                              float(hf_config.get("norm_eps", 1e-5)))
        return (None, head) if token else (head, None)
