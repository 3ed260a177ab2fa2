"""text-embeddings-inference-compatible routes: ``/embed``, ``/rerank``, ``/predict``, ``/tokenize``,
``/info``, ``/health``, ``/metrics``.

Shapes follow TEI's HTTP API (``/embed`` answers a list of vectors, errors are
``{"error", "error_type"}``). ``/rerank`` and ``/predict`` need a cross-encoder
or classifier; on an embedding model they answer TASK_NOT_SUPPORTED, as TEI
does for the wrong model type. ``/metrics`` serves the same Prometheus
registry as ``--metrics-port``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import poolstream
from poolstream.http.common import (
    core_of,
    embed_params,
    guarded,
    json_response,
    prompts_of,
    run_embeddings,
    vector,
)
from poolstream.http.core import ServingCore, unsupported_task
from poolstream.http.errors import ErrorStyle
from poolstream.http.schemas import TEIEmbedRequest, TEIInfo, TEIPredictRequest, TEIRerankRequest, TEITokenizeRequest
from poolstream.server.errors import invalid_argument

router = APIRouter(tags=["TEI"])


def check_tei_options(truncation_direction: str, prompt_name: str | None = None) -> None:
    if truncation_direction.lower() == "left":
        raise invalid_argument("INVALID_PARAMS", "truncation_direction Left is not supported: inputs are cut on "
                               "the right", "truncation_direction")
    if prompt_name:
        raise invalid_argument("INVALID_PARAMS", f"prompt_name {prompt_name!r}: the model defines no prompts",
                               "prompt_name")


@router.post("/embed", response_model=list[list[float]], summary="Embed texts (TEI)")
async def embed(request: Request, body: TEIEmbedRequest) -> Response:
    async def work() -> Response:
        check_tei_options(body.truncation_direction, body.prompt_name)
        prompts = prompts_of(body.inputs, "inputs")
        params = embed_params(dimensions=body.dimensions, normalize=body.normalize, truncate=body.truncate)
        outputs = await run_embeddings(request, prompts, params, "inputs")
        return json_response([vector(o).tolist() for o in outputs])

    return await guarded(ErrorStyle.TEI, work)


async def tei_rerank(request: Request, raw: Any) -> Response:
    async def work() -> Response:
        TEIRerankRequest.model_validate(raw)  # a malformed body is a 400 first
        core = core_of(request)
        raise unsupported_task("rerank", core.model_name, "TEI's /rerank needs a re-ranker (cross-encoder) model; "
                               "vLLM's form (`documents`) scores with embeddings")
        return Response()  # pragma: no cover  (mypy: a value on every path)

    return await guarded(ErrorStyle.TEI, work)


@router.post("/predict", summary="Classify texts or pairs (TEI; needs a classifier model)")
async def predict(request: Request, body: TEIPredictRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        raise unsupported_task("predict", core.model_name, "it is not a sequence-classification model")

    return await guarded(ErrorStyle.TEI, work)


@router.post("/tokenize", summary="Tokenize texts (TEI)")
async def tokenize(request: Request, body: TEITokenizeRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        core.engine()
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        core.check_prompt_count(len(texts), "inputs")
        return json_response([tokens_of(core, t, body.add_special_tokens) for t in texts])

    return await guarded(ErrorStyle.TEI, work)


def tokens_of(core: ServingCore, text: str, add_special_tokens: bool) -> list[dict[str, Any]]:
    """TEI's SimpleToken list for one text (character offsets into the text)."""
    enc = core.tokenizer().encode(text, add_special_tokens=add_special_tokens)
    out = []
    for tid, tok, (start, stop), special in zip(enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask):
        is_special = bool(special)
        out.append({"id": tid, "text": tok if is_special else text[start:stop], "special": is_special,
                    "start": None if is_special else start, "stop": None if is_special else stop})
    return out


def tei_info(core: ServingCore) -> dict[str, Any]:
    facts = core.facts()
    config = core.state.config
    if facts.is_embedding:
        model_type: dict[str, Any] = {"embedding": {"pooling": core.engine().model_info.pooling}}
    else:
        model_type = {"pooling": {"output_shape": list(facts.output_shape)}}
    return {
        "model_id": facts.name,
        "model_sha": None,
        "model_dtype": facts.compute_dtype,
        "model_type": model_type,
        "max_concurrent_requests": config.limits.max_concurrent_calls,
        "max_input_length": facts.max_model_len,
        "max_batch_tokens": config.engine_config.max_num_batched_tokens,
        "max_batch_requests": config.engine_config.max_num_seqs,
        "max_client_batch_size": config.limits.max_prompts_per_request,
        "auto_truncate": True,
        "tokenization_workers": 1,
        "version": f"poolstream-{poolstream.__version__}",
        "sha": None,
        "docker_label": None,
    }


@router.get("/info", response_model=TEIInfo, summary="Model and limits (TEI)")
async def info(request: Request) -> Response:
    async def work() -> Response:
        return json_response(tei_info(core_of(request)))

    return await guarded(ErrorStyle.TEI, work)


@router.get("/health", summary="200 when the model is loaded and the server is not draining (TEI)")
async def health(request: Request) -> Response:
    async def work() -> Response:
        core_of(request).engine()  # NOT_READY / DRAINING -> 503
        return Response(status_code=200)

    return await guarded(ErrorStyle.TEI, work)


@router.get("/metrics", summary="Prometheus metrics (the registry of --metrics-port)")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry if request.app.state.metrics is not None else None
    if registry is None:
        return Response("# no metrics registry\n", media_type="text/plain")
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
