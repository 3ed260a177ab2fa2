"""text-embeddings-inference-compatible routes: ``/embed``, ``/rerank``, ``/predict``, ``/tokenize``,
``/info``, ``/health``, ``/metrics``.

Shapes follow TEI's HTTP API (``/embed`` answers a list of vectors, errors are
``{"error", "error_type"}``). ``/rerank`` runs a cross-encoder's "score" task and
``/predict`` a classifier's "classify" task; a model without the task answers
TASK_NOT_SUPPORTED, as TEI does for the wrong model type. ``/metrics`` serves the same Prometheus
registry as ``--metrics-port``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import poolstream
from poolstream.http.common import (
    classify_prompts,
    core_of,
    score_pairs,
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


def check_tei_options(truncation_direction: str) -> None:
    if truncation_direction.lower() == "left":
        raise invalid_argument("INVALID_PARAMS", "truncation_direction Left is not supported: inputs are cut on "
                               "the right", "truncation_direction")


@router.post("/embed", response_model=list[list[float]], summary="Embed texts (TEI)")
async def embed(request: Request, body: TEIEmbedRequest) -> Response:
    async def work() -> Response:
        check_tei_options(body.truncation_direction)
        prompts = prompts_of(body.inputs, "inputs")
        params = embed_params(dimensions=body.dimensions, normalize=body.normalize, truncate=body.truncate,
                              prompt_name=body.prompt_name)
        outputs = await run_embeddings(request, prompts, params, "inputs")
        return json_response([vector(o).numpy() for o in outputs])

    return await guarded(ErrorStyle.TEI, work)


async def tei_rerank(request: Request, raw: Any) -> Response:
    """TEI's rerank: a cross-encoder scores (query, text) pairs; answers sorted by score."""

    async def work() -> Response:
        body = TEIRerankRequest.model_validate(raw)
        check_tei_options(body.truncation_direction)
        core = core_of(request)
        if not core.facts().serves("score"):
            raise unsupported_task("rerank", core.model_name, "TEI's /rerank needs a re-ranker (cross-encoder) "
                                   "model; vLLM's form (`documents`) also scores with embeddings")
        if not body.texts:
            raise invalid_argument("INVALID_PROMPT", "texts must not be empty", "texts")
        scores, _ = await score_pairs(request, [body.query] * len(body.texts), body.texts, 0, None, "rerank",
                                      activation=not body.raw_scores)
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        return json_response([{"index": i, "score": scores[i], **({"text": body.texts[i]} if body.return_text
                                                                    else {})} for i in order])

    return await guarded(ErrorStyle.TEI, work)


def predict_prompts(inputs: Any) -> tuple[list[Any], bool]:
    """TEI's PredictInput: a text, a batch of texts, or [text] / [text, text_pair] items;
    (prompts, whether the answer is one list rather than a list per input)."""
    if isinstance(inputs, str):
        return [inputs], True
    prompts: list[Any] = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            prompts.append(item)
        elif isinstance(item, list) and len(item) == 1:
            prompts.append(item[0])
        elif isinstance(item, list) and len(item) == 2:
            prompts.append({"prompt": item[0], "text_pair": item[1]})
        else:
            raise invalid_argument("INVALID_PROMPT", f"inputs[{i}] must be a text or a [text, text_pair] pair",
                                   f"inputs[{i}]")
    for i, p in enumerate(prompts):
        if not (p if isinstance(p, str) else p["prompt"]):
            raise invalid_argument("INVALID_PROMPT", f"inputs[{i}] is an empty string", f"inputs[{i}]")
    return prompts, False


@router.post("/predict", summary="Classify texts or text pairs (TEI; a sequence-classification model)")
async def predict(request: Request, body: TEIPredictRequest) -> Response:
    async def work() -> Response:
        check_tei_options(body.truncation_direction)
        prompts, single = predict_prompts(body.inputs)
        rows, labels, _ = await classify_prompts(request, prompts, 0, "predict", "inputs",
                                                 activation=not body.raw_scores, truncate=body.truncate)
        answers = []
        for row in rows:
            ranked = sorted(enumerate(row.tolist()), key=lambda jv: jv[1], reverse=True)
            answers.append([{"score": float(v), "label": labels[j]} for j, v in ranked])
        return json_response(answers[0] if single else answers)

    return await guarded(ErrorStyle.TEI, work)


@router.post("/tokenize", summary="Tokenize texts (TEI)")
async def tokenize(request: Request, body: TEITokenizeRequest) -> Response:
    async def work() -> Response:
        core = core_of(request)
        core.engine()
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        core.check_prompt_count(len(texts), "inputs")
        texts = [core.with_prompt(t, body.prompt_name) for t in texts]
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
    if facts.is_text and facts.kind in ("reranker", "classifier"):
        model_type: dict[str, Any] = {facts.kind: {"id2label": dict(enumerate(facts.labels)),
                                                   "label2id": {n: i for i, n in enumerate(facts.labels)}}}
    elif facts.is_embedding:
        model_type = {"embedding": {"pooling": core.engine().model_info.pooling}}
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
