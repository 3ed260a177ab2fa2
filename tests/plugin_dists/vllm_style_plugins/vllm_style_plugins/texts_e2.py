"""An E2 (vLLM ~0.17) plugin: ``parse_data`` gets only the request's ``data``,
``merge_pooling_params`` sets the task, no ``output_to_response`` (the host wraps the
output), and the output is a pydantic model with nested models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor
from vllm.pooling_params import PoolingParams


class Item(BaseModel):
    index: int
    norm: float
    tokens: int


class TextsOutput(BaseModel):
    items: list[Item]
    task: str


class TextsProcessor(IOProcessor[list, TextsOutput]):
    def parse_data(self, data: object) -> list:
        if not isinstance(data, dict) or not isinstance(data.get("texts"), list):
            raise ValueError("data must be {'texts': [...]}")
        return [str(t) for t in data["texts"]]

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        params = params or PoolingParams()
        params.task = "embed"
        return params

    def pre_process(self, prompt: list, request_id: str | None = None, **kwargs: Any):
        return prompt

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None,
                     **kwargs: Any) -> TextsOutput:
        return TextsOutput(
            items=[Item(index=i, norm=float(o.outputs.data.norm()), tokens=len(o.prompt_token_ids))
                   for i, o in enumerate(model_output)],
            task="embed",
        )
