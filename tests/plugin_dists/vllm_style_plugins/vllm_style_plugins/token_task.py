"""A token-level plugin (E1, post-0.16 keyword): the params hook reads the pooling task
from the raw ``IOProcessorRequest`` it gets as ``request=`` and sets
``PoolingParams.task`` ("token_embed", "token_classify", "embed", ...); the engine must
run that pooler, and answer a task the model cannot do with INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.entrypoints.pooling.pooling.protocol import IOProcessorRequest, IOProcessorResponse
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor
from vllm.pooling_params import PoolingParams


class TokenTaskProcessor(IOProcessor[list, dict]):
    def parse_request(self, request: Any) -> list:
        data = request.data if isinstance(request, IOProcessorRequest) else request.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("texts"), list):
            raise ValueError("expected {'texts': [...], 'task': str}")
        return [str(t) for t in data["texts"]]

    def pre_process(self, prompt: list, request_id: str | None = None, **kwargs: Any):
        return prompt

    def validate_or_generate_params(self, params: PoolingParams | None = None,
                                    request: IOProcessorRequest | None = None) -> PoolingParams:
        task = "plugin"
        if request is not None and isinstance(request.data, dict):
            task = str(request.data.get("task", "plugin"))
        return PoolingParams(task=task)

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None,
                     **kwargs: Any) -> dict:
        return {"shapes": [list(o.outputs.data.shape) for o in model_output],
                "tokens": [len(o.prompt_token_ids) for o in model_output]}

    def output_to_response(self, plugin_output: dict) -> IOProcessorResponse:
        return IOProcessorResponse(data=plugin_output)
