"""The IO Processor plugin interface: vLLM's ``IOProcessor``, all three API eras in one class.

``vllm.plugins.io_processors.interface.IOProcessor`` is this class (through poolstream's
stand-in ``vllm`` package), so a vLLM plugin runs unchanged. The eras (docs/plugins.md
has the table):

- **E1** (vLLM 0.10.2-0.16): ``parse_request``, ``validate_or_generate_params``,
  ``output_to_response``; constructor ``(vllm_config)``;
- **E2** (~0.17): ``parse_data``, ``merge_pooling_params``/``merge_sampling_params``;
- **E3** (0.18+): constructor ``(vllm_config, renderer)``; only ``pre_process`` and
  ``post_process`` are abstract.

Each old and new name falls back on the other, as vLLM's shims did, so a plugin
implements whichever its era has; the pipeline (``pipeline.py``) calls the name the
plugin overrides (``PluginHooks``). poolstream additionally guarantees:

- every hook gets the request id, in the server and in-process alike;
- ``post_process_async`` is fed ``(index, PoolingRequestOutput)`` pairs in
  *completion order while the engine still runs*; the default restores input order;
- hooks that accept them get ``request=`` (vLLM's meaning: the raw
  ``IOProcessorRequest``) and ``parsed_request=`` (what ``parse_request``/``parse_data``
  returned), so per-request options travel with the call instead of living on ``self``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Generic, TypeVar

from poolstream.config import PoolstreamConfig
from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse
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
    # poolstream extension: True when the plugin's sync hooks may run for several
    # requests at once (no per-request state on ``self``). The default keeps vLLM's
    # guarantee: one request's parse -> pre_process -> params run with no other
    # request's hook in between, and sync hooks never overlap.
    concurrent_hooks: bool = False

    def __init__(self, vllm_config: PoolstreamConfig, renderer: Any = None):
        self.vllm_config = vllm_config
        if renderer is not None:
            self.renderer = renderer

    # -- input ----------------------------------------------------------------
    def parse_request(self, request: Any) -> IOProcessorInput:
        """E1: validate the request (the whole ``IOProcessorRequest``, or offline the whole
        prompt dict). Defaults to ``parse_data`` on its ``data``."""
        if _overrides(self, "parse_data"):
            data = request.get("data") if isinstance(request, dict) else getattr(request, "data", request)
            return self.parse_data(data)
        raise NotImplementedError(f"{type(self).__name__} implements neither parse_request nor parse_data")

    def parse_data(self, data: Any) -> IOProcessorInput:
        """E2/E3: validate the request's ``data``. Defaults to ``parse_request`` (vLLM's shim)."""
        if _overrides(self, "parse_request"):
            return self.parse_request(data)
        raise NotImplementedError(f"{type(self).__name__} implements neither parse_data nor parse_request")

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

    # -- params ---------------------------------------------------------------
    def validate_or_generate_params(self, params: PoolingParams | None = None, **kwargs: Any) -> PoolingParams:
        """E1. Defaults to ``merge_pooling_params`` when the plugin has it, else ``params``
        or ``PoolingParams(task="plugin")``."""
        if _overrides(self, "merge_pooling_params"):
            return self.merge_pooling_params(params)
        return params or PoolingParams(task="plugin")

    def merge_pooling_params(self, params: PoolingParams | None = None, **kwargs: Any) -> PoolingParams:
        """E2/E3. Defaults to ``validate_or_generate_params`` (vLLM's shim), else
        ``params`` or ``PoolingParams(task="plugin")``."""
        if _overrides(self, "validate_or_generate_params"):
            return self.validate_or_generate_params(params)
        return params or PoolingParams(task="plugin")

    def merge_sampling_params(self, params: Any = None) -> Any:
        """E2: generation params. poolstream serves pooling models only; never called."""
        from poolstream.plugins.io_processors.compat_types import SamplingParams

        return params or SamplingParams()

    # -- output ---------------------------------------------------------------
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

    def output_to_response(self, plugin_output: IOProcessorOutput) -> IOProcessorResponse:
        """E1 (optional from E2 on): the response. Defaults to ``IOProcessorResponse(data=output)``."""
        return IOProcessorResponse(data=plugin_output)


def _overrides(processor: IOProcessor, name: str) -> bool:
    """Whether the plugin's class defines ``name`` itself (not only this base class)."""
    return getattr(type(processor), name, None) is not getattr(IOProcessor, name)


__all__ = ["IOProcessor", "IOProcessorInput", "IOProcessorOutput", "IOProcessorRequest", "IOProcessorResponse"]
