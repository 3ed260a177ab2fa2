"""Pooling tasks on the engine side: which task a request runs, which params it may
carry, and the per-request post-processing of each task's raw model output.

Transport-neutral: the gRPC servicer, the HTTP front ends and plugins all reach
this through ``PoolingParams.task`` (models/base.py has the task table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from poolstream.engine.errors import InvalidPromptError
from poolstream.models.base import DEFAULT_TASK_ALIASES, TASKS, ModelSpec
from poolstream.outputs import PoolingOutput
from poolstream.pooling_params import PoolingParams

# PoolingParams fields each task takes (vLLM checks the same way: a set field a task does not
# use is an error, not silently ignored).
_TASK_PARAMS = {
    "embed": ("normalize", "dimensions"),
    "token_embed": ("normalize", "dimensions"),
    "classify": ("use_activation",),
    "score": ("use_activation",),
    "token_classify": ("use_activation",),
    "embed_sparse": ("sparse_top_k",),
}
_TASK_SPECIFIC = ("normalize", "dimensions", "use_activation", "sparse_top_k")


def resolve_task(spec: ModelSpec, task: str | None, model_name: str = "this model") -> str:
    """The task a request runs; InvalidPromptError (INVALID_ARGUMENT) when the model lacks it."""
    if task is None or task in DEFAULT_TASK_ALIASES:
        return spec.default_task
    if task not in TASKS:
        raise InvalidPromptError(
            f"unknown task {task!r}; pooling tasks are: {', '.join(TASKS)} "
            "(or 'plugin' / 'encode' / unset for the model's default)")
    if spec.tensor_inputs:
        return task  # tensor models have one output whatever the task asks (see their plugin)
    if task not in spec.tasks:
        raise InvalidPromptError(
            f"task {task!r} is not supported by {model_name}; supported tasks: {', '.join(spec.tasks)}")
    return task


def check_task_params(task: str, params: PoolingParams) -> None:
    """A params field set for a task that does not use it is an error."""
    allowed = _TASK_PARAMS.get(task, _TASK_SPECIFIC)
    for name in _TASK_SPECIFIC:
        if name not in allowed and getattr(params, name) is not None:
            raise InvalidPromptError(f"task {task!r} does not take the parameter {name!r}")


def task_dim(spec: ModelSpec, task: str) -> int | None:
    """Size of an embed / token_embed vector (what ``dimensions`` may cut), if known."""
    shape = spec.task_shapes.get(task) if spec.task_shapes else None
    if shape is None and task == spec.default_task:
        shape = spec.output_shape
    if shape and shape[-1] > 0:
        return int(shape[-1])
    return None


def apply_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """softmax / sigmoid / identity over the last dimension."""
    if name == "softmax":
        return torch.softmax(x, dim=-1)
    if name == "sigmoid":
        return torch.sigmoid(x)
    return x


def sparse_output(row: torch.Tensor, top_k: int | None, tokenizer: Any) -> PoolingOutput:
    """A SPLADE [vocab] weight row -> its nonzero terms, largest first (``top_k`` at most)."""
    idx = row.nonzero().squeeze(1)
    values = row.index_select(0, idx)
    order = torch.argsort(values, descending=True, stable=True)
    if top_k is not None:
        order = order[:top_k]
    idx, values = idx[order], values[order]
    tokens = None
    if tokenizer is not None:
        tokens = [tokenizer.id_to_token(int(i)) or "" for i in idx.tolist()]
    return PoolingOutput(data=values, indices=idx, tokens=tokens)


def labelled(row: torch.Tensor, labels: Sequence[str]) -> PoolingOutput:
    return PoolingOutput(data=row, labels=tuple(labels) if labels else None)
