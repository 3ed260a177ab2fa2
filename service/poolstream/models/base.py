"""The interface every model implementation follows.

The engine's runner only talks to this interface, so text encoders (BERT
family, and the architectures beside it) and tensor models (the
Prithvi-style segmenter) share one scheduler, batching and streaming path.
Implementations register their config.json ``architectures`` name in
``poolstream.models.registry``.

Pooling tasks
=============

A request chooses what the model computes with ``PoolingParams.task``
(vLLM's names; ``None``, ``"plugin"`` and ``"encode"`` mean the model's
default task, ``ModelSpec.default_task``):

============== ============================== =====================================================
task           model returns (per batch)      the runner makes of it, per request
============== ============================== =====================================================
embed          [b, dim] pooled embedding      Matryoshka ``dimensions``, then L2 ``normalize``
classify       [b, num_labels] logits         softmax / sigmoid (``ModelSpec.classify_activation``)
                                              unless ``use_activation=False`` (raw logits)
score          [b, num_labels] logits of a    sigmoid for one label, as sentence-transformers'
               (text, text_pair) prompt       CrossEncoder (``ModelSpec.score_activation``)
token_embed    [b, seq, hidden]               cut to the prompt's length, per-token normalize
token_classify [b, seq, num_labels]           cut to the prompt's length, per-token activation
embed_sparse   [b, vocab] SPLADE weights      the nonzero terms, largest first (``sparse_top_k``):
                                              values plus ``indices`` and token strings
============== ============================== =====================================================

Every batch holds one task (the processor groups requests by task), so a
model never mixes heads within a forward. ``ModelSpec.tasks`` lists what a
model serves; the engine rejects any other task with INVALID_ARGUMENT before
queueing ("task 'classify' is not supported by BertModel (...); supported
tasks: embed, token_embed").

How to implement a text model
-----------------------------

Subclass ``TextEncoderModel`` and implement:

- ``hidden_states(input_ids, attention_mask, token_type_ids)`` -> [b, s, h]
  last-layer token states. ``attention_mask`` is None when nothing in the
  batch is padded (take the maskless fast path); ``token_type_ids`` is None
  unless a prompt of the batch is a pair AND ``spec().token_type_ids`` is
  True (models without a token-type table never receive it). Right padding.
- the heads the checkpoint has, each optional (``NotImplementedError`` from
  the base when absent; do not list the task in ``spec().tasks`` then):
  ``sequence_logits(hidden, attention_mask)`` -> [b, num_labels] (the
  ``...ForSequenceClassification`` head, its own pooling included: BERT's
  pooler on [CLS], RoBERTa's dense+tanh on <s>, Qwen's last token ...);
  ``token_logits(hidden)`` -> [b, s, num_labels]; ``mlm_logits(hidden)`` ->
  [n, vocab] for a 2-D [n, h] input (the masked-LM head, for SPLADE).
- ``embed_pool(hidden, attention_mask)`` -> [b, dim]: defaults to the
  sentence-transformers pooling in ``self.pooling`` (mean/cls/last) followed
  by ``self.dense`` modules; override for other schemes.
- ``spec()``: fill ``tasks``, ``default_task``, ``labels`` (``id2label`` in
  index order), ``token_type_ids``, and the activations with
  ``task_spec_fields(hf_config, mdir, tasks, default_task)``.

``TextEncoderModel.forward_task`` turns those into the table above;
``forward_tokens`` (the embed task, no token types) may be overridden with a
faster path, as BERT's packed execution does.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from poolstream.models.pooling import pool

if TYPE_CHECKING:
    from poolstream.models.model_dir import ModelDirConfig

# Pooling tasks, in vLLM's names (embed_sparse: TEI's /embed_sparse, SPLADE).
TASKS = ("embed", "classify", "score", "token_embed", "token_classify", "embed_sparse")
# Task names that mean "whatever the model does by default".
DEFAULT_TASK_ALIASES = ("plugin", "encode", "")
# Tasks whose output is one row per token of the prompt.
TOKEN_TASKS = ("token_embed", "token_classify")
# Tasks that run a classification head and take an activation.
LOGIT_TASKS = ("classify", "score", "token_classify")
# Most MLM logits SPLADE computes at once (fp32: 256 MB; ~2k tokens of a 30k vocabulary).
_SPLADE_CHUNK_ELEMENTS = 1 << 26
# Activation names used by ModelSpec.
ACTIVATIONS = ("softmax", "sigmoid", "identity")


@dataclass(frozen=True)
class ModelSpec:
    """What a loaded model produces; reported by GetServerInfo."""

    output_shape: tuple[int, ...]  # of the default task's output; -1 for sizes that follow the input
    pooling: str  # "mean" | "cls" | "last" | "none"
    normalize: bool  # L2-normalise by default
    max_model_len: int  # 0 for models without text input
    tensor_inputs: tuple[str, ...] = ()  # e.g. ("pixel_values",); empty for text models
    extra: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("embed",)  # pooling tasks served (TASKS); empty: tensor models' own output
    default_task: str = "embed"
    labels: tuple[str, ...] = ()  # classifier label names, index order (config.json id2label)
    classify_activation: str = "softmax"  # applied for classify / token_classify unless use_activation=False
    score_activation: str = "sigmoid"  # applied for score unless use_activation=False
    token_type_ids: bool = False  # the model reads token_type_ids (pair prompts)
    backend: str = "native"  # "native" or "transformers" (the fallback)
    # Output shape per task (-1: the prompt's token count / the number of sparse terms);
    # the default task's entry may be left out (output_shape).
    task_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


class PoolingModel(nn.Module):
    """Base class of model implementations.

    Text models implement ``forward_tokens`` (and, for tasks beyond embed,
    ``forward_task``: see ``TextEncoderModel``); tensor models set
    ``tensor_inputs`` and implement ``forward_tensors``. Both return one row
    per batch item (before normalisation / dimension truncation /
    activation, which the runner applies according to PoolingParams).
    """

    tensor_inputs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def load(
        cls, model_dir: Path, hf_config: dict[str, Any], device: torch.device, dtype: torch.dtype
    ) -> "PoolingModel":
        """Build the model from a directory (config.json + model.safetensors)."""

    @abstractmethod
    def spec(self) -> ModelSpec:
        """Describe outputs and defaults."""

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] int64 ids and mask -> [batch, ...] pooled outputs (the embed task)."""
        raise NotImplementedError(f"{type(self).__name__} takes no text input")

    def forward_task(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One task's raw output for a batch (the module docstring's table).

        The default serves "embed" through ``forward_tokens``: models written
        before tasks existed keep working."""
        if task == "embed" and token_type_ids is None:
            return self.forward_tokens(input_ids, attention_mask)
        raise NotImplementedError(f"{type(self).__name__} does not implement task {task!r}")

    def forward_tensors(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Batched named tensors ([batch, ...] each) -> [batch, ...] outputs."""
        raise NotImplementedError(f"{type(self).__name__} takes no tensor input")

    # NOTE(engine): the two hooks below are poolstream additions with safe
    # defaults, so models written against the original interface keep working.

    def check_tensor_inputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        """Raise ValueError if one prompt's tensors (no batch dim) are unusable.

        Called by the engine before queueing, so a bad shape fails that prompt
        with INVALID_ARGUMENT instead of failing a whole batch. Names were
        already checked against ``spec().tensor_inputs``.
        """

    def tensor_prompt_cost(self, inputs: Mapping[str, torch.Tensor]) -> int:
        """Scheduler cost of one tensor prompt, in the units of ``max_num_batched_tokens``.

        E.g. the number of patches (H*W/patch**2) for a ViT-style model. The
        default, 1 per item, makes ``max_num_seqs`` the only bound.
        """
        return 1


_DENSE_ACTIVATIONS = {"Tanh": torch.tanh, "Identity": lambda x: x, "ReLU": F.relu, "Sigmoid": torch.sigmoid}
DenseModule = tuple[torch.Tensor, Optional[torch.Tensor], str]  # (weight, bias, activation name)


class TextEncoderModel(PoolingModel):
    """A text encoder whose tasks are built from token states and optional heads.

    Subclasses set ``self.pooling`` (mean/cls/last), ``self.dense`` (the
    sentence-transformers Dense modules, fp32) and implement
    ``hidden_states`` plus the heads they have (see the module docstring).
    """

    pooling: str = "cls"
    dense: list[DenseModule]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[b, s] ids (+ mask, None when unpadded; + token types) -> [b, s, h] last-layer states."""
        raise NotImplementedError

    def sequence_logits(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """[b, s, h] -> [b, num_labels]: the sequence-classification head."""
        raise NotImplementedError(f"{type(self).__name__} has no sequence classification head")

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[b, s, h] -> [b, s, num_labels]: the token-classification head."""
        raise NotImplementedError(f"{type(self).__name__} has no token classification head")

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, h] token states -> [n, vocab]: the masked-LM head (SPLADE)."""
        raise NotImplementedError(f"{type(self).__name__} has no masked-LM head")

    def embed_pool(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """[b, s, h] -> [b, dim]: sentence-transformers pooling, then its Dense modules (fp32)."""
        if hidden.dtype != torch.float32:  # pool and project in fp32: fp16 sums over 512 tokens lose bits
            hidden = hidden.float()
        out = pool(hidden, attention_mask, self.pooling)
        for w, bias, act in getattr(self, "dense", None) or []:
            out = _DENSE_ACTIVATIONS[act](F.linear(out, w, bias))
        return out

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = _drop_full_mask(attention_mask)
        return self.embed_pool(self.hidden_states(input_ids, mask, None), mask)

    def forward_task(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if task == "embed" and token_type_ids is None:
            return self.forward_tokens(input_ids, attention_mask)
        mask = _drop_full_mask(attention_mask)
        hidden = self.hidden_states(input_ids, mask, token_type_ids)
        if task == "embed":
            return self.embed_pool(hidden, mask)
        if task in ("classify", "score"):
            return self.sequence_logits(hidden, mask).float()
        if task == "token_embed":
            return hidden.float()
        if task == "token_classify":
            return self.token_logits(hidden).float()
        if task == "embed_sparse":
            return self._splade(hidden, attention_mask)
        raise NotImplementedError(f"{type(self).__name__} does not implement task {task!r}")

    def _splade(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """SPLADE pooling over real tokens of log(1 + relu(MLM logits)) -> [b, vocab].

        ``self.splade`` (the SparseEncoder's SpladePooling config, ModelDirConfig.splade):
        max (default) or sum over tokens; activation relu (default) or log1p_relu (one
        more log1p, OpenSearch's models). The MLM head runs on the batch's real tokens
        only, in chunks of at most ``_SPLADE_CHUNK_ELEMENTS`` logits: a whole batch's
        [tokens, vocab] logits would be gigabytes, one prompt at a time is a small,
        slow GEMM each.
        """
        strategy, act = getattr(self, "splade", None) or ("max", "relu")
        b, s = attention_mask.shape
        lens = attention_mask.sum(dim=1).tolist()
        flat = hidden.reshape(b * s, -1)[attention_mask.reshape(-1).bool()]  # [tokens, h], prompt order
        vocab = int(self.mlm_logits(flat[:1]).shape[-1])
        chunk = max(1, _SPLADE_CHUNK_ELEMENTS // vocab)
        out = torch.zeros(b, vocab, dtype=torch.float32, device=hidden.device)
        bounds = [0]
        for n in lens:
            bounds.append(bounds[-1] + int(n))
        for start in range(0, flat.shape[0], chunk):
            end = min(start + chunk, flat.shape[0])
            x = torch.log1p(torch.relu(self.mlm_logits(flat[start:end]).float()))
            if act == "log1p_relu":
                x = torch.log1p(x)
            for i in range(b):  # the prompts this chunk holds tokens of
                lo, hi = max(bounds[i], start), min(bounds[i + 1], end)
                if lo >= hi:
                    continue
                part = x[lo - start:hi - start]
                if strategy == "max":  # all values are >= 0, so the zero start is neutral
                    out[i] = torch.maximum(out[i], part.amax(dim=0))
                else:
                    out[i] += part.sum(dim=0)
        return out


def _drop_full_mask(attention_mask: torch.Tensor) -> Optional[torch.Tensor]:
    """None when nothing is padded (CPU only: the check would force a GPU sync)."""
    if attention_mask.device.type == "cpu" and bool(attention_mask.all()):
        return None
    return attention_mask


def task_spec_fields(hf_config: dict[str, Any], mdir: "ModelDirConfig | None" = None) -> dict[str, Any]:
    """``labels``, ``classify_activation`` and ``score_activation`` from a model's config.

    - labels: ``id2label`` in index order ("LABEL_i" where a key is missing);
    - classify: sigmoid for one label or ``problem_type`` multi_label_classification,
      else softmax (TEI's and vLLM's rule);
    - score: sentence-transformers CrossEncoder's: config.json's
      ``sentence_transformers.activation_fn`` when set, else sigmoid for one label
      and identity for several.
    """
    num_labels = int(hf_config.get("num_labels") or len(hf_config.get("id2label") or {}) or 0)
    id2label = {int(k): str(v) for k, v in (hf_config.get("id2label") or {}).items()}
    labels = tuple(id2label.get(i, f"LABEL_{i}") for i in range(num_labels))
    multi = hf_config.get("problem_type") == "multi_label_classification"
    classify = "sigmoid" if num_labels == 1 or multi else "softmax"
    score = "sigmoid" if num_labels == 1 else "identity"
    st = hf_config.get("sentence_transformers") or {}
    act = str(st.get("activation_fn") or "").rsplit(".", 1)[-1]
    if act:
        score = {"Sigmoid": "sigmoid", "Identity": "identity", "Softmax": "softmax"}.get(act, score)
    return {"labels": labels, "classify_activation": classify, "score_activation": score}
