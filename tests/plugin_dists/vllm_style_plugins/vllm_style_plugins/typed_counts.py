"""A vLLM plugin (E2) that also declares poolstream's ``output_types``: its pydantic output
has the shape of ``poolstream.payloads.text_embedding.v1.TextEmbeddingResponse``, so
gRPC clients get that typed message (``google.protobuf.Any``) instead of JSON; if the
output ever stops matching the message, it is sent as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor

from poolstream.payloads.text_embedding.v1 import text_embedding_pb2


class Counts(BaseModel):
    token_counts: list[int]
    truncated: list[bool]
    note: str | None = None


class TypedCountsProcessor(IOProcessor[dict, Counts]):
    output_types = (text_embedding_pb2.TextEmbeddingResponse.DESCRIPTOR.full_name,)

    def parse_data(self, data: object) -> dict:
        if not isinstance(data, dict) or not isinstance(data.get("texts"), list):
            raise ValueError("data must be {'texts': [...]}")
        return data

    def pre_process(self, prompt: dict, request_id: str | None = None, **kwargs: Any):
        return [str(t) for t in prompt["texts"]]

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None,
                     parsed_request: dict | None = None, **kwargs: Any) -> Counts:
        note = parsed_request.get("note") if parsed_request else None
        return Counts(token_counts=[len(o.prompt_token_ids) for o in model_output],
                      truncated=[False for _ in model_output], note=note)
