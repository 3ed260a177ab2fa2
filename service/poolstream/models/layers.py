"""Building blocks shared by the native text encoders (MPNet, ModernBERT, Qwen, Nomic, GTE).

Every encoder here keeps hidden states 2-D, ``[tokens, hidden]``: with a
padded batch on CPU, ``tokens`` are the real tokens only ("packed"), so every
linear layer and norm runs on real tokens and only attention sees the padded
``[batch, heads, seq, head_dim]`` layout (scatter in, gather out). This is
what made the BERT encoder ~1.6x faster on mixed-length batches; see
``bert._Encoder.forward``.

All functions are TorchScript-compatible: the encoders are scripted so that
their forward runs without the GIL (see ``bert._Encoder``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def frozen(t: torch.Tensor) -> nn.Parameter:
    """A weight that is moved by ``.to()`` with the module, never trained."""
    return nn.Parameter(t, requires_grad=False)


def packed_index(key_mask: torch.Tensor) -> torch.Tensor:
    """Flat positions of the real tokens in the [batch * seq] grid (any padding side)."""
    return key_mask.reshape(-1).nonzero().squeeze(1)


def token_positions(key_mask: Optional[torch.Tensor], b: int, s: int, device: torch.device) -> torch.Tensor:
    """[b, s] position of each token inside its own sequence.

    Counted over real tokens only, so a left-padded row gets the positions it
    would have unpadded (rotary attention is relative: the result equals the
    unpadded one, which is what Hugging Face's left-padded forward also gives
    up to rounding).
    """
    if key_mask is None:
        return torch.arange(s, device=device).unsqueeze(0).expand(b, s)
    return (key_mask.long().cumsum(1) - 1).clamp(min=0)


def scatter_rows(x: torch.Tensor, packed: Optional[torch.Tensor], rows: int) -> torch.Tensor:
    """Packed [tokens, ...] -> padded [rows, -1] with zeros at padding; identity when not packed."""
    if packed is None:
        return x
    flat = x.reshape(x.shape[0], -1)
    return flat.new_zeros(rows, flat.shape[1]).index_copy_(0, packed, flat)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, b: int, s: int,
              mask: Optional[torch.Tensor], packed: Optional[torch.Tensor], causal: bool,
              scale: Optional[float] = None) -> torch.Tensor:
    """Scaled dot-product attention on (possibly packed) token rows.

    q: [tokens, heads, d]; k, v: [tokens, kv_heads, d] (grouped-query attention
    when kv_heads < heads). ``mask``: bool (True = attend) or additive float,
    broadcastable to [b, heads, s, s]; None with ``causal`` uses SDPA's causal
    kernel. Returns [tokens, heads * d].
    """
    heads, d = q.shape[1], q.shape[2]
    kv_heads = k.shape[1]
    rows = b * s
    q4 = scatter_rows(q, packed, rows).view(b, s, heads, d).transpose(1, 2)
    k4 = scatter_rows(k, packed, rows).view(b, s, kv_heads, d).transpose(1, 2)
    v4 = scatter_rows(v, packed, rows).view(b, s, kv_heads, d).transpose(1, 2)
    if kv_heads != heads:
        k4 = k4.repeat_interleave(heads // kv_heads, dim=1)
        v4 = v4.repeat_interleave(heads // kv_heads, dim=1)
    a = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, is_causal=causal and mask is None,
                                       scale=scale)
    a = a.transpose(1, 2).reshape(rows, heads * d)
    if packed is not None:
        a = a.index_select(0, packed)
    return a


def key_padding_mask(key_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """0/1 [b, s] -> bool [b, 1, 1, s] (broadcast over heads and queries); None stays None."""
    if key_mask is None:
        return None
    return key_mask.to(torch.bool)[:, None, None, :]


def causal_mask(key_mask: Optional[torch.Tensor], s: int, device: torch.device) -> Optional[torch.Tensor]:
    """Causal AND key-padding bool mask [b, 1, s, s]; None (SDPA's causal kernel) without padding.

    Every query also sees itself, so a padding row never has all keys masked
    (SDPA would return NaN there; the row is discarded anyway).
    """
    if key_mask is None:
        return None
    causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
    keys = key_mask.to(torch.bool)[:, None, None, :]
    return (causal[None, None] & keys) | torch.eye(s, dtype=torch.bool, device=device)[None, None]


def rope_theta(hf_config: dict[str, Any], default: float) -> float:
    """The rotary base from either config era (``rope_theta`` or transformers 5's ``rope_parameters``)."""
    params = hf_config.get("rope_parameters") or {}
    scaling = hf_config.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ValueError(f"rope type {kind!r} is not supported (only the default rotary embedding)")
    return float(params.get("rope_theta") or hf_config.get("rope_theta") or default)


class Rotary(nn.Module):
    """Rotary position embedding (the "rotate half" / GPT-NeoX layout).

    The frequencies are computed exactly as Hugging Face computes them
    (float32, ``base ** (arange(0, dim, 2) / dim)``) so float32 results agree
    to the last bits.
    """

    def __init__(self, head_dim: int, base: float, rotary_dim: int = 0):
        super().__init__()
        dim = rotary_dim or head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.rotary_dim = dim

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [tokens] -> cos, sin [tokens, 1, rotary_dim] (broadcast over heads)."""
        freqs = positions.float()[:, None] * self.inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [tokens, heads, d] by cos/sin [tokens, 1, r]; dims past r pass through (partial rotary)."""
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat((_rotate(x[..., :r], cos, sin), x[..., r:]), dim=-1)
    return _rotate(x, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Llama/Qwen compute it: statistics in float32, scale in the input dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    return F.layer_norm(x, [x.shape[-1]], weight, bias, eps)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The Hugging Face ``ACT2FN`` names these encoders use."""
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return F.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return F.silu(x)
    if name == "relu":
        return F.relu(x)
    raise ValueError("unsupported activation " + name)


SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "relu")


def script(module: nn.Module, what: str) -> Optional[torch.jit.ScriptModule]:
    """TorchScript ``module`` (runs without the GIL), or None: then the caller runs it eagerly."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 2.x, still shipped
            return torch.jit.script(module)
    except Exception as e:  # noqa: BLE001 - any failure just means eager mode
        logger.warning("TorchScript unavailable (%s); running the %s encoder eagerly", e, what)
        return None
