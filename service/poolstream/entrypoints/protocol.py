"""Plugin request and response types (vLLM's ``IOProcessorRequest`` / ``IOProcessorResponse``).

``IOProcessorRequest.data`` holds the payload as the client sent it:

- a ``dict`` (or list / scalar) for a JSON payload, as vLLM's ``/pooling`` gives it;
- a protobuf message for a typed payload (``google.protobuf.Any``, unpacked);
- a ``RawPayload`` for raw bytes with a media type.

``IOProcessorResponse.data`` may be any of the same three; the server encodes
a dict/list as JSON, a message as ``Any``, and ``RawPayload``/``bytes`` as raw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from poolstream.pooling_params import PoolingParams

T = TypeVar("T")


@dataclass(frozen=True)
class RawPayload:
    """Raw bytes with their media type (e.g. an ``image/tiff`` file)."""

    media_type: str
    data: bytes


@dataclass
class IOProcessorRequest(Generic[T]):
    """A plugin request: vLLM's body with ``data`` (the fields of vLLM 0.15's
    ``IOProcessorRequest``), plus poolstream's ``params`` (the call's PoolingParams)."""

    data: T
    model: str | None = None
    priority: int = 0
    request_id: str | None = None
    params: PoolingParams | None = None
    task: str = "plugin"
    user: str | None = None
    encoding_format: str = "float"
    embed_dtype: str = "float32"
    endianness: str = "native"

    @property
    def truncate_prompt_tokens(self) -> int | None:
        """vLLM's request field; here it travels in ``params``."""
        return self.params.truncate_prompt_tokens if self.params is not None else None

    def to_pooling_params(self) -> PoolingParams:
        return self.params or PoolingParams(task=self.task)


@dataclass
class IOProcessorResponse(Generic[T]):
    """A plugin result, as ``output_to_response`` returns it."""

    data: T
    request_id: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
