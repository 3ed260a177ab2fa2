"""vLLM-compatible routes: ``/pooling`` (IO Processor plugins), ``/v1/score``, ``/rerank``, ``/classify``.

``POST /pooling`` with ``data`` is vLLM's online plugin API: the body is an
IOProcessorRequest, ``data`` goes to the plugin's ``parse_request`` (through
the same pipeline, limits and watchdog as gRPC ``Process``), and the answer is
an IOProcessorResponse ``{"request_id", "created_at", "data"}``. With
``input`` instead of ``data`` it is vLLM's raw pooling (one tensor per input).

Score and rerank run a cross-encoder's "score" task when the model has one,
else the cosine similarity of normalised embeddings (vLLM's bi-encoder
scoring); ``/classify`` runs a sequence classifier's "classify" task. A model
without the task answers 501 TASK_NOT_SUPPORTED.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from poolstream.entrypoints.protocol import RawPayload
from poolstream.http.common import (
    check_model,
    classify_prompts,
    score_pairs,
    core_of,
    encode_tensor,
    guarded,
    json_response,
    prompts_of,
    request_id_of,
    token_count,
)
from poolstream.http.errors import ErrorStyle
from poolstream.http.middleware import deadline_of
from poolstream.http.schemas import (
    ClassifyRequest,
    IOProcessorResponse,
    PoolingRequest,
    PoolingResponse,
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from poolstream.pooling_params import PoolingParams
from poolstream.server.convert import _jsonable
from poolstream.server.errors import invalid_argument

router = APIRouter(tags=["vLLM"])


def plugin_data_json(data: Any) -> Any:
    """A plugin's response data as JSON: messages by their JSON mapping, raw bytes as base64."""
    if isinstance(data, Message):
        return json_format.MessageToDict(data, preserving_proto_field_name=True)
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, RawPayload):
        return {"media_type": data.media_type, "data": base64.b64encode(data.data).decode("ascii")}
    if isinstance(data, (bytes, bytearray, memoryview)):
        return {"media_type": "application/octet-stream", "data": base64.b64encode(bytes(data)).decode("ascii")}
    return _jsonable(data)


@router.post("/pooling", response_model=IOProcessorResponse | PoolingResponse,
             summary="Plugin request (data) or raw pooling (input), as vLLM's /pooling")
async def pooling(request: Request, body: PoolingRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        check_model(core, body.model)
        if body.input is not None and body.data is None:
            return await _raw_pooling(request, body)
        request_id = body.request_id or request_id_of()
        remaining = deadline_of(request.scope)
        with core.admitted(remaining):
            result = await core.process(body.data, None, request_id, remaining, body.priority)
        response = result.response
        return json_response({
            "request_id": response.request_id or request_id,
            "created_at": int(response.created_at or time.time()),
            "data": plugin_data_json(response.data),
        })

    return await guarded(ErrorStyle.VLLM, work)


async def _raw_pooling(request: Request, body: PoolingRequest) -> Response:
    core = core_of(request)
    assert body.input is not None
    prompts = prompts_of(body.input, "input")
    params = PoolingParams(task="encode", dimensions=body.dimensions, normalize=body.normalize,
                           truncate_prompt_tokens=body.truncate_prompt_tokens)
    try:
        params.verify()
    except ValueError as e:
        raise invalid_argument("INVALID_PARAMS", str(e), "body") from e
    core.check_prompt_count(len(prompts), "input")
    remaining = deadline_of(request.scope)
    with core.admitted(remaining):
        outputs = await core.encode(prompts, params, request_id_of(), remaining, body.priority)
    tokens = token_count(outputs)
    return json_response({
        "id": request_id_of(),
        "object": "list",
        "created": int(time.time()),
        "model": core.model_name,
        "data": [{"index": i, "object": "pooling", "data": encode_tensor(out.outputs.data, body.encoding_format)}
                 for i, out in enumerate(outputs)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


def _pairs(text_1: str | list[str], text_2: str | list[str]) -> tuple[list[str], list[str]]:
    """vLLM's pairing: one against many, or element-wise for two lists of the same length."""
    left = [text_1] if isinstance(text_1, str) else list(text_1)
    right = [text_2] if isinstance(text_2, str) else list(text_2)
    if not left or not right:
        raise invalid_argument("INVALID_PROMPT", "text_1 and text_2 must not be empty", "text_1")
    if len(left) == 1:
        left = left * len(right)
    if len(left) != len(right):
        raise invalid_argument(
            "INVALID_PROMPT", f"text_1 has {len(left)} items and text_2 {len(right)}: give one text_1, or as "
            "many as text_2", "text_2")
    return left, right


@router.post("/v1/score", response_model=ScoreResponse, summary="Score text pairs (vLLM)")
@router.post("/score", response_model=ScoreResponse, include_in_schema=False)
async def score(request: Request, body: ScoreRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        check_model(core, body.model)
        left, right = _pairs(body.text_1, body.text_2)
        scores, tokens = await score_pairs(request, left, right, body.priority, body.truncate_prompt_tokens,
                                           "score")
        return json_response({
            "id": f"score-{request_id_of()}", "object": "list", "created": int(time.time()),
            "model": core.model_name,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    return await guarded(ErrorStyle.VLLM, work)


async def vllm_rerank(request: Request, body: RerankRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        check_model(core, body.model)
        if not body.documents:
            raise invalid_argument("INVALID_PROMPT", "documents must not be empty", "documents")
        scores, tokens = await score_pairs(request, [body.query] * len(body.documents), body.documents,
                                           body.priority, body.truncate_prompt_tokens, "rerank")
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        if body.top_n:
            order = order[: body.top_n]
        return json_response({
            "id": f"rerank-{request_id_of()}", "model": core.model_name,
            "usage": {"total_tokens": tokens},
            "results": [{"index": i, "relevance_score": scores[i],
                         **({"document": {"text": body.documents[i]}} if body.return_documents else {})}
                        for i in order],
        })

    return await guarded(ErrorStyle.VLLM, work)


@router.post("/v1/rerank", response_model=RerankResponse, summary="Rerank documents (vLLM / Jina / Cohere)")
async def rerank_v1(request: Request, body: RerankRequest) -> Response:
    return await vllm_rerank(request, body)


@router.post("/classify", summary="Classify texts (vLLM; needs a classification model)")
async def classify(request: Request, body: ClassifyRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        check_model(core, body.model)
        prompts = prompts_of(body.input, "input")
        rows, labels, tokens = await classify_prompts(request, prompts, body.priority, "classify", "input")
        return json_response({
            "id": f"classify-{request_id_of()}", "object": "list", "created": int(time.time()),
            "model": core.model_name,
            "data": [{"index": i, "label": labels[int(row.argmax())], "probs": row.tolist(),
                      "num_classes": row.numel()} for i, row in enumerate(rows)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    return await guarded(ErrorStyle.VLLM, work)
