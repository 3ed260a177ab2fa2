"""Pooling parameters (vLLM's ``PoolingParams``, with poolstream's output options)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

OutputDtype = Literal["float32", "float16", "bfloat16", "binary"]


@dataclass
class PoolingParams:
    """How a prompt's output is pooled and returned. ``None`` means the model's default.

    - ``task``: vLLM's pooling task, which selects the model's pooler: "embed", "classify",
      "score" (a (text, text_pair) prompt through a cross-encoder), "token_embed",
      "token_classify", "embed_sparse" (SPLADE); None, "plugin" and "encode" mean the
      model's default task (``ModelSpec.default_task``). Others: INVALID_ARGUMENT.
    - ``normalize``: L2-normalise embeddings.
    - ``dimensions``: keep the first N values (Matryoshka), re-normalised if normalising.
    - ``truncate``: cut text longer than the model allows (default True) or reject it.
    - ``truncate_prompt_tokens``: cut text to at most this many tokens.
    - ``use_activation``: classify/score/token_classify: apply the model's activation
      (softmax, or sigmoid for one label; vLLM's name). False: raw logits. Default True.
    - ``prompt_name``: a sentence-transformers prompt (config_sentence_transformers.json
      ``prompts``) prepended to text prompts; None: the model's ``default_prompt_name``.
    - ``sparse_top_k``: embed_sparse: keep the k largest terms (default: every nonzero one).
    - ``output_dtype``: element type of returned tensors (conversion happens at the edge).
    - ``extra_kwargs``: free-form options for plugins and models.
    """

    task: str | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    truncate: bool | None = None
    truncate_prompt_tokens: int | None = None
    output_dtype: OutputDtype = "float32"
    use_activation: bool | None = None
    prompt_name: str | None = None
    sparse_top_k: int | None = None
    extra_kwargs: dict[str, Any] | None = None

    def clone(self, **changes: Any) -> "PoolingParams":
        return replace(self, **changes)

    def verify(self) -> None:
        """Raise ValueError for values no model accepts."""
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {self.dimensions}")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < 1:
            raise ValueError(
                f"truncate_prompt_tokens must be >= 1, got {self.truncate_prompt_tokens}"
            )
        if self.sparse_top_k is not None and self.sparse_top_k < 1:
            raise ValueError(f"sparse_top_k must be >= 1, got {self.sparse_top_k}")
        if self.output_dtype not in ("float32", "float16", "bfloat16", "binary"):
            raise ValueError(f"unsupported output_dtype {self.output_dtype!r}")
