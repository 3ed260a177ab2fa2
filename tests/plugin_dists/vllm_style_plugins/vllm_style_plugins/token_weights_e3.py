"""An E3 (vLLM 0.18+) plugin in the shape of vLLM's ``bge_m3_sparse`` test plugin: the
constructor takes ``(vllm_config, renderer)`` and maps token ids back to text with
``renderer.get_tokenizer()``; ``merge_pooling_params(params, request=...)`` reads the raw
``IOProcessorRequest`` (vLLM's post-0.16 keyword); the response is pydantic with vLLM's
``UsageInfo``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from vllm.config import VllmConfig
from vllm.entrypoints.openai.engine.protocol import UsageInfo
from vllm.entrypoints.pooling.pooling.protocol import IOProcessorRequest
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor
from vllm.pooling_params import PoolingParams
from vllm.renderers import BaseRenderer


class TokenWeight(BaseModel):
    token_id: int
    token: str | None
    weight: float


class TokenWeightsResponse(BaseModel):
    data: list[list[TokenWeight]]
    usage: UsageInfo
    model: str | None = None


class TokenWeightsProcessor(IOProcessor[dict, TokenWeightsResponse]):
    def __init__(self, vllm_config: VllmConfig, renderer: BaseRenderer):
        super().__init__(vllm_config, renderer)
        self.renderer = renderer
        self.max_len = vllm_config.model_config.max_model_len

    def parse_data(self, data: object) -> dict:
        if not isinstance(data, dict) or not isinstance(data.get("input"), list):
            raise TypeError("data should be a dictionary with an 'input' list")
        return data

    def merge_pooling_params(self, params: PoolingParams | None = None,
                             request: IOProcessorRequest | None = None) -> PoolingParams:
        params = params or PoolingParams(task="plugin")
        if request is not None and not isinstance(request, IOProcessorRequest):
            raise TypeError("request= must be the raw IOProcessorRequest")
        return params

    def pre_process(self, prompt: dict, request_id: str | None = None, **kwargs: Any):
        return [str(t) for t in prompt["input"]]

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None,
                     **kwargs: Any) -> TokenWeightsResponse:
        tokenizer = self.renderer.get_tokenizer()
        rows, total = [], 0
        for out in model_output:
            ids = list(out.prompt_token_ids)
            total += len(ids)
            weight = float(out.outputs.data.float().norm())
            rows.append([TokenWeight(token_id=i, token=tokenizer.id_to_token(i), weight=weight) for i in ids])
        return TokenWeightsResponse(data=rows, usage=UsageInfo(prompt_tokens=total, total_tokens=total),
                                    model=self.vllm_config.model_config.served_model_name)
