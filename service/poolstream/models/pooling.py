"""Token pooling shared by text encoders: [batch, seq, hidden] -> [batch, hidden].

Semantics follow sentence-transformers' ``Pooling`` module (mean divides by
the clamped mask sum; "last" is the last non-padding token, left or right padding).
"""

from __future__ import annotations

import torch

SUPPORTED_POOLING = ("mean", "cls", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Pool token states. ``attention_mask`` None means no padding in the batch."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
        summed = (hidden * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1e-9)
    if mode == "last":
        if attention_mask is None:
            return hidden[:, -1]
        # Index of the last real token, whichever side the padding is on (decoder
        # embedders such as Qwen3-Embedding are usually run left-padded).
        steps = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
        last = (attention_mask.long() * steps).argmax(dim=1)  # [batch]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unsupported pooling {mode!r}; supported: {', '.join(SUPPORTED_POOLING)}")
