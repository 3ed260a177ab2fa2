"""The GLiNER/ColQwen-style pattern (E1): ``pre_process`` stashes a per-request value on
``self`` and the no-argument ``validate_or_generate_params()`` pops it. Safe in vLLM
because nothing runs between one request's two calls; the test sends many concurrent
requests, each asking for a different output size, and checks every one got its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.config import VllmConfig
from vllm.entrypoints.pooling.pooling.protocol import IOProcessorRequest, IOProcessorResponse
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor
from vllm.pooling_params import PoolingParams


class StashParamsProcessor(IOProcessor[dict, dict]):
    def __init__(self, vllm_config: VllmConfig):
        super().__init__(vllm_config)
        self._pending_dimensions: int | None = None

    def parse_request(self, request: Any) -> dict:
        data = request.data if isinstance(request, IOProcessorRequest) else request.get("data", request)
        if not isinstance(data, dict) or "text" not in data or "dimensions" not in data:
            raise ValueError("expected {'text': str, 'dimensions': int}")
        return data

    def pre_process(self, prompt: dict, request_id: str | None = None):
        self._pending_dimensions = int(prompt["dimensions"])
        return prompt["text"]

    def validate_or_generate_params(self, params: PoolingParams | None = None) -> PoolingParams:
        dims, self._pending_dimensions = self._pending_dimensions, None
        return PoolingParams(task="embed", dimensions=dims)

    # No **kwargs (vLLM never passes more than these): poolstream must not pass its extras.
    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None) -> dict:
        return {"sizes": [int(o.outputs.data.shape[-1]) for o in model_output]}

    def output_to_response(self, plugin_output: dict) -> IOProcessorResponse:
        return IOProcessorResponse(data=plugin_output)
