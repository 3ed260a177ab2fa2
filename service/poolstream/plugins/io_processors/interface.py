"""The IO Processor plugin interface, faithful to vLLM's ``IOProcessor``.

A plugin written against ``vllm.plugins.io_processors.interface.IOProcessor``
ports by changing imports only. poolstream additionally guarantees:

- every hook gets the request id, in the server and in-process alike;
- ``post_process_async`` is fed ``(index, PoolingRequestOutput)`` pairs in
  *completion order while the engine still runs*, so an override can consume
  chunks as they arrive; the default restores input order first;
- hooks get the parsed request as the ``request=`` keyword, so options travel
  with the call instead of living on ``self`` (one instance serves every
  concurrent request: keep no per-request state on it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Generic, TypeVar

from poolstream.config import PoolstreamConfig
from poolstream.entrypoints.protocol import IOProcessorResponse
from poolstream.inputs import PromptType
from poolstream.outputs import PoolingRequestOutput
from poolstream.pooling_params import PoolingParams

IOProcessorInput = TypeVar("IOProcessorInput")
IOProcessorOutput = TypeVar("IOProcessorOutput")


class IOProcessor(ABC, Generic[IOProcessorInput, IOProcessorOutput]):
    """Turns a custom payload into prompts, and pooled outputs into a custom result."""

    # Optional poolstream extensions, reported by GetServerInfo so that clients
    # (and grpcurl through reflection) know which typed payloads to send.
    input_types: Sequence[str] = ()  # fully qualified protobuf message names
    output_types: Sequence[str] = ()
    input_media_types: Sequence[str] = ()  # raw payload media types

    def __init__(self, vllm_config: PoolstreamConfig):
        self.vllm_config = vllm_config

    @abstractmethod
    def pre_process(
        self,
        prompt: IOProcessorInput,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> PromptType | Sequence[PromptType]:
        raise NotImplementedError

    async def pre_process_async(
        self,
        prompt: IOProcessorInput,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> PromptType | Sequence[PromptType]:
        return self.pre_process(prompt, request_id, **kwargs)

    @abstractmethod
    def post_process(
        self,
        model_output: Sequence[PoolingRequestOutput],
        request_id: str | None = None,
        **kwargs: Any,
    ) -> IOProcessorOutput:
        raise NotImplementedError

    async def post_process_async(
        self,
        model_output: AsyncGenerator[tuple[int, PoolingRequestOutput], None]
        | AsyncIterator[tuple[int, PoolingRequestOutput]],
        request_id: str | None = None,
        **kwargs: Any,
    ) -> IOProcessorOutput:
        # Outputs arrive in completion order; post_process expects input order.
        collected = [item async for item in model_output]
        collected.sort(key=lambda pair: pair[0])
        return self.post_process([output for _, output in collected], request_id, **kwargs)

    @abstractmethod
    def parse_request(self, request: Any) -> IOProcessorInput:
        raise NotImplementedError

    def validate_or_generate_params(self, params: PoolingParams | None = None) -> PoolingParams:
        return params or PoolingParams()

    @abstractmethod
    def output_to_response(self, plugin_output: IOProcessorOutput) -> IOProcessorResponse:
        raise NotImplementedError
