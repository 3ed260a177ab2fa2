"""OpenAI-compatible routes: ``POST /v1/embeddings`` and ``GET /v1/models``.

What the ``openai`` SDK, LangChain's ``OpenAIEmbeddings``, LlamaIndex and
LiteLLM call. Inputs are texts or token ids; ``dimensions`` keeps the first N
values (Matryoshka) and renormalises; ``encoding_format=base64`` sends
little-endian float32 bytes (what the SDK asks for by default and decodes).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from poolstream.http.common import (
    check_model,
    core_of,
    embed_params,
    encode_vector,
    guarded,
    json_response,
    prompts_of,
    request_id_of,
    run_embeddings,
    token_count,
    vector,
)
from poolstream.http.errors import ErrorStyle
from poolstream.http.schemas import EmbeddingRequest, EmbeddingResponse, ModelList

router = APIRouter(tags=["OpenAI"])
_STARTED = int(time.time())


@router.post("/v1/embeddings", response_model=EmbeddingResponse, summary="Create embeddings (OpenAI)")
async def create_embeddings(request: Request, body: EmbeddingRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        check_model(core, body.model)
        prompts = prompts_of(body.input, "input")
        params = embed_params(dimensions=body.dimensions, truncate_prompt_tokens=body.truncate_prompt_tokens)
        outputs = await run_embeddings(request, prompts, params, "input", body.priority)
        tokens = token_count(outputs)
        return json_response({
            "id": f"embd-{request_id_of()}",
            "object": "list",
            "created": int(time.time()),
            "model": core.model_name,
            "data": [
                {"object": "embedding", "embedding": encode_vector(vector(out), body.encoding_format), "index": i}
                for i, out in enumerate(outputs)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    return await guarded(ErrorStyle.OPENAI, work)


@router.get("/v1/models", response_model=ModelList, summary="The served model (OpenAI)")
async def list_models(request: Request) -> Response:
    async def work() -> Response:
        core = core_of(request)
        card = {"id": core.model_name, "object": "model", "created": _STARTED, "owned_by": "poolstream",
                "root": core.state.config.model_config.model}
        if core.ready:
            card["max_model_len"] = core.facts().max_model_len
        return json_response({"object": "list", "data": [card]})

    return await guarded(ErrorStyle.OPENAI, work)
