"""Native Qwen2 / Qwen3 decoders as embedders (Qwen3-Embedding, gte-Qwen2) and scorers.

A decoder used for embeddings: causal attention, last-token pooling (from
the sentence-transformers config, else the default here), RMSNorm,
grouped-query attention, rotary positions, SwiGLU MLP; Qwen3 adds an RMSNorm
on each head of q and k, Qwen2 has q/k/v biases. ``...ForSequenceClassification``
checkpoints score the last token with one linear layer (``score``).

Speed: q/k/v are one GEMM and gate/up another; padded CPU batches run packed
(see ``layers``), and an unpadded batch uses SDPA's causal kernel without a
mask. Left- or right-padded masks are both handled: positions count real
tokens only, and last-token pooling finds the last real token.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.layers import (
    Rotary, apply_rotary, attention, causal_mask, frozen, packed_index, rms_norm, rope_theta, scatter_rows,
    token_positions,
)
from poolstream.models.text_model import ClassifierHead, NativeTextModel, Weights


class _DecoderLayer(nn.Module):
    """Pre-RMSNorm block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, w: dict[str, torch.Tensor], p: str, heads: int, kv_heads: int, head_dim: int, eps: float):
        super().__init__()
        att = p + "self_attn."
        self.qkv_w = frozen(torch.cat([w[att + f"{n}_proj.weight"] for n in "qkv"]))
        biases = [w.get(att + f"{n}_proj.bias") for n in "qkv"]
        self.qkv_b: Optional[torch.Tensor] = None
        if all(b is not None for b in biases):
            self.qkv_b = frozen(torch.cat(biases))  # type: ignore[arg-type]
        self.o_w = frozen(w[att + "o_proj.weight"])
        self.q_norm: Optional[torch.Tensor] = None
        self.k_norm: Optional[torch.Tensor] = None
        if att + "q_norm.weight" in w:  # Qwen3
            self.q_norm = frozen(w[att + "q_norm.weight"])
            self.k_norm = frozen(w[att + "k_norm.weight"])
        self.gate_up_w = frozen(torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]))
        self.down_w = frozen(w[p + "mlp.down_proj.weight"])
        self.ln1 = frozen(w[p + "input_layernorm.weight"])
        self.ln2 = frozen(w[p + "post_attention_layernorm.weight"])
        self.heads, self.kv_heads, self.head_dim, self.eps = heads, kv_heads, head_dim, eps

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, b: int, s: int,
                mask: Optional[torch.Tensor], packed: Optional[torch.Tensor]) -> torch.Tensor:
        t, d = x.shape[0], self.head_dim
        qkv = F.linear(rms_norm(x, self.ln1, self.eps), self.qkv_w, self.qkv_b)
        q, k, v = qkv.split([self.heads * d, self.kv_heads * d, self.kv_heads * d], dim=1)
        q = q.reshape(t, self.heads, d)
        k = k.reshape(t, self.kv_heads, d)
        v = v.reshape(t, self.kv_heads, d)
        q_norm, k_norm = self.q_norm, self.k_norm
        if q_norm is not None and k_norm is not None:
            q = rms_norm(q, q_norm, self.eps)
            k = rms_norm(k, k_norm, self.eps)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        a = attention(q, k, v, b, s, mask, packed, True)
        x = x + F.linear(a, self.o_w)
        gate, up = F.linear(rms_norm(x, self.ln2, self.eps), self.gate_up_w).chunk(2, dim=1)
        return x + F.linear(F.silu(gate) * up, self.down_w)


class _Decoder(nn.Module):
    """Token ids -> final-norm hidden states, causal."""

    def __init__(self, w: dict[str, torch.Tensor], cfg: dict[str, Any]):
        super().__init__()
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        self.hidden = int(cfg["hidden_size"])
        head_dim = int(cfg.get("head_dim") or self.hidden // heads)
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.embed = frozen(w["embed_tokens.weight"])
        self.layers = nn.ModuleList([_DecoderLayer(w, f"layers.{i}.", heads, kv_heads, head_dim, eps)
                                     for i in range(int(cfg["num_hidden_layers"]))])
        self.norm = frozen(w["norm.weight"])
        self.rotary = Rotary(head_dim, rope_theta(cfg, 10000.0))
        self.eps = eps

    def forward(self, input_ids: torch.Tensor, key_mask: Optional[torch.Tensor], pack: bool,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ids [b, s] -> [b, s, h]; no token-type table, so ``token_type_ids`` is never passed."""
        b, s = input_ids.shape[0], input_ids.shape[1]
        positions = token_positions(key_mask, b, s, input_ids.device).reshape(-1)
        x = F.embedding(input_ids.reshape(-1), self.embed)
        packed: Optional[torch.Tensor] = None
        if key_mask is not None and pack:
            packed = packed_index(key_mask)
            x = x.index_select(0, packed)
            positions = positions.index_select(0, packed)
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        mask = causal_mask(key_mask, s, input_ids.device)
        for layer in self.layers:
            x = layer(x, cos, sin, b, s, mask, packed)
        x = rms_norm(x, self.norm, self.eps)
        return scatter_rows(x, packed, b * s).view(b, s, self.hidden)


class QwenEmbeddingModel(NativeTextModel):
    """Qwen2Model / Qwen3Model (and their ...ForSequenceClassification) checkpoints."""

    anchor: ClassVar[str] = "embed_tokens.weight"
    family: ClassVar[str] = "Qwen"
    default_pooling: ClassVar[str] = "last"  # causal: only the last token has seen the whole prompt

    @classmethod
    def build_body(cls, weights: dict[str, torch.Tensor], hf_config: dict[str, Any]) -> tuple[nn.Module, int]:
        if hf_config.get("use_sliding_window"):
            raise ValueError("Qwen sliding-window attention (use_sliding_window) is not supported")
        if hf_config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {hf_config.get('hidden_act')!r}")
        return _Decoder(weights, hf_config), int(hf_config.get("max_position_embeddings") or 0)

    @classmethod
    def build_heads(cls, architecture: str, rest: Weights, body: Weights,
                    hf_config: dict[str, Any]) -> tuple[ClassifierHead | None, ClassifierHead | None]:
        """``score``: one linear on the last token (sequence) or on every token."""
        if "score.weight" not in rest:
            return None, None
        if architecture.endswith("ForTokenClassification"):
            return None, ClassifierHead("none", rest["score.weight"], rest.get("score.bias"))
        return ClassifierHead("last", rest["score.weight"], rest.get("score.bias")), None
