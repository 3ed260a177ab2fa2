"""vLLM's types at the plugin boundary: keyword-compatible stand-ins, and conversion of
whatever a plugin hands back (vLLM's own classes where vLLM is installed) into
poolstream's.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass, field
from typing import Any

from poolstream.pooling_params import PoolingParams

# Tasks a plugin's params may carry (vLLM's names). "plugin" means "the model's default".
POOLING_TASKS = ("embed", "classify", "score", "encode", "token_embed", "token_classify", "plugin")


@dataclass
class VllmPoolingParams(PoolingParams):
    """``vllm.pooling_params.PoolingParams``: poolstream's params plus vLLM's keywords.

    ``softmax``/``activation`` (older names) and ``use_activation`` ask for the model's
    activation on classification outputs; ``skip_reading_prefix_cache`` and
    ``requires_token_ids`` are engine hints that poolstream's engine does not need.
    """

    softmax: bool | None = None
    activation: bool | None = None
    use_activation: bool | None = None
    skip_reading_prefix_cache: bool | None = None
    requires_token_ids: bool = False

    def __post_init__(self) -> None:
        if self.use_activation is None:
            self.use_activation = self.softmax if self.softmax is not None else self.activation

    def verify(self, task: str | None = None, model_config: Any = None) -> None:  # type: ignore[override]
        """vLLM's signature; ``task`` fills an unset task, as in vLLM."""
        if task is not None and self.task is None:
            self.task = task
        super().verify()


@dataclass
class SamplingParams:
    """vLLM's generation parameters; only constructed (E2's ``merge_sampling_params``)."""

    n: int = 1
    temperature: float = 1.0
    max_tokens: int | None = 16
    extra_args: dict[str, Any] | None = None

    def __init__(self, **kwargs: Any):
        for f in dataclasses.fields(SamplingParams):
            setattr(self, f.name, kwargs.pop(f.name, f.default))
        self.extra_args = {**(self.extra_args or {}), **kwargs} or None


@dataclass
class UsageInfo:
    """vLLM's token usage block (a pydantic model there; a dataclass here, pydantic accepts both)."""

    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: Any = field(default=None)


_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(PoolingParams))


def to_pooling_params(params: Any) -> PoolingParams | None:
    """What a plugin's params hook returned, as poolstream ``PoolingParams``.

    poolstream's class (or its vLLM-keyword subclass) passes through untouched, so the
    task a plugin set reaches the engine unchanged. Another object with the same
    attributes (real vLLM's ``PoolingParams``, msgspec-based) is copied field by field.
    """
    if params is None or isinstance(params, PoolingParams):
        return params
    if not hasattr(params, "task"):
        raise TypeError(
            f"the plugin's params hook returned {type(params).__name__}; expected PoolingParams"
        )
    values = {name: getattr(params, name) for name in _PARAM_FIELDS if hasattr(params, name)}
    if values.get("output_dtype") is None:
        values.pop("output_dtype", None)
    converted = VllmPoolingParams(**values)
    for name in ("use_activation", "softmax", "activation", "skip_reading_prefix_cache"):
        value = getattr(params, name, None)
        if value is not None:
            setattr(converted, name, value)
    return converted


def native_request(request: Any) -> Any:
    """The request as the plugin's ``vllm`` knows it.

    Without vLLM, plugins import poolstream's own ``IOProcessorRequest``, so the request
    passes as it is. Where vLLM is installed, plugins check ``isinstance(request,
    IOProcessorRequest)`` against vLLM's pydantic class, so they get one of those, with
    the same ``data``, ``model``, ``priority`` and ``request_id`` (when the class has it).
    """
    cls = _native_request_class()
    if cls is None:
        return request
    fields = {"data": request.data, "model": request.model, "priority": request.priority}
    try:
        return cls(**fields, request_id=request.request_id)
    except Exception:  # an older class without request_id
        return cls(**fields)


@functools.cache
def _native_request_class() -> Any:
    """vLLM's IOProcessorRequest class, or None without a real vLLM (looked up once)."""
    from poolstream.plugins import vllm_compat

    if not vllm_compat.real_vllm_installed():
        return None
    for module in ("vllm.entrypoints.pooling.pooling.protocol", "vllm.entrypoints.openai.protocol"):
        try:
            return importlib.import_module(module).IOProcessorRequest
        except (ImportError, AttributeError):
            continue
    return None
