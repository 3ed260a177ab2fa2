"""Engine output types, with the fields of vLLM's ``vllm.outputs``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # annotations only: the plugin interface imports without torch (`pip install poolstream`)
    import torch

_O = TypeVar("_O")


@dataclass(eq=False)
class PoolingOutput:
    """The pooled output of one prompt (vLLM's ``PoolingOutput``).

    ``data`` is the task's tensor: an embedding [dim], class scores [labels],
    per-token rows [tokens, ...], or a sparse embedding's values [terms]. The
    optional fields are poolstream's additions, set by the tasks that have them:
    ``labels`` (classify / score / token_classify: the name of each column of
    ``data``), ``indices`` and ``tokens`` (embed_sparse: the vocabulary id and
    token string of each value, largest value first).
    """

    data: torch.Tensor
    labels: tuple[str, ...] | None = None
    indices: torch.Tensor | None = None
    tokens: list[str] | None = None

    def __eq__(self, other: object) -> bool:
        # Same semantics as vLLM: equal when every element is equal.
        return isinstance(other, PoolingOutput) and bool((self.data == other.data).all())

    def __repr__(self) -> str:
        return f"PoolingOutput(data=<{tuple(self.data.shape)} {self.data.dtype}>)"


@dataclass(frozen=True)
class RequestTiming:
    """When the engine admitted a prompt and ran its batch (``time.monotonic()`` seconds)."""

    arrival: float  # admitted to the engine
    started: float  # its batch began (collation, forward, post-processing)
    finished: float  # its batch's outputs were on the host

    @property
    def queue_s(self) -> float:
        return max(0.0, self.started - self.arrival)

    @property
    def inference_s(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass
class PoolingRequestOutput(Generic[_O]):
    """The engine's result for one prompt (vLLM's ``PoolingRequestOutput``).

    ``truncated`` and ``timing`` are poolstream's additions: the prompt was cut
    to the model's maximum length; when the engine queued and ran it (the
    server reports it in trailing metadata, see server/timing.py).
    """

    request_id: str
    outputs: _O
    prompt_token_ids: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0
    finished: bool = True
    truncated: bool = False
    timing: RequestTiming | None = None


# Offline results of a plugin request carry the plugin's output, like vLLM's
# ``PoolingRequestOutput[Any]``.
PluginRequestOutput = PoolingRequestOutput[Any]
