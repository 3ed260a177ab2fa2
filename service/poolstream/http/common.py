"""What the HTTP routes share: error capture, inputs to prompts, embedding a batch of inputs."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import numpy as np
import orjson
import torch
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from poolstream.http.core import ServingCore, unsupported_task
from poolstream.http.errors import ErrorStyle, error_response
from poolstream.http.middleware import deadline_of
from poolstream.inputs import PromptType
from poolstream.outputs import PoolingRequestOutput
from poolstream.pooling_params import PoolingParams
from poolstream.server.errors import ServiceError, invalid_argument, to_service_error
from poolstream.server.observability import current_call

InputType = str | list[str] | list[int] | list[list[int]]


def core_of(request: Request) -> ServingCore:
    return request.app.state.core


def request_id_of() -> str:
    call = current_call()
    return call.request_id if call is not None and call.request_id else "pool-unknown"


def note_error(error: ServiceError) -> ServiceError:
    """Record the outcome for the access log and metrics (the middleware reads it)."""
    call = current_call()
    if call is not None:
        call.reason = error.reason
        call.marks["grpc_code"] = error.code.name
    return error


async def guarded(style: ErrorStyle, work: Callable[[], Awaitable[Response]]) -> Response:
    """Run a route's work; any failure becomes the API's error body (never a bare 500)."""
    try:
        return await work()
    except asyncio.CancelledError:
        raise
    except ValidationError as e:
        return error_response(note_error(validation_error(e.errors())), style)
    except Exception as e:
        return error_response(note_error(to_service_error(e)), style)


def validation_error(errors: Sequence[Any], prefix: str = "") -> ServiceError:
    """Pydantic/FastAPI validation errors as INVALID_ARGUMENT with one violation per field."""
    violations = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        path = ".".join(loc) or prefix or "body"
        violations.append((path, str(err.get("msg", "invalid"))))
    message = "; ".join(f"{f}: {d}" for f, d in violations[:5]) or "invalid request body"
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", message, violations)


def parse_body(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise invalid_argument("INVALID_REQUEST", "the request body must be a JSON object", "body")
    return model.model_validate(body)


async def json_body(request: Request) -> Any:
    import json

    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid_argument("INVALID_JSON", f"the request body is not valid JSON: {e}", "body") from None


def check_model(core: ServingCore, model: str | None) -> None:
    """vLLM's rule: a named model must be the served one (404 otherwise)."""
    if model and model != core.model_name:
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND",
            f"The model `{model}` does not exist. This server serves `{core.model_name}` (GET /v1/models).",
            [("model", "not the served model")],
        )


def prompts_of(value: InputType, field: str) -> list[PromptType]:
    """A text, texts, token ids or token-id lists as engine prompts."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        items = [list(value)]
    else:
        items = list(value)
    prompts: list[PromptType] = []
    for i, item in enumerate(items):
        path = f"{field}[{i}]" if not isinstance(value, str) else field
        if isinstance(item, str):
            if not item:
                raise invalid_argument("INVALID_PROMPT", f"{path} is an empty string", path)
            prompts.append(item)
        elif isinstance(item, list):
            if not item:
                raise invalid_argument("INVALID_PROMPT", f"{path} is an empty token list", path)
            prompts.append({"prompt_token_ids": [int(t) for t in item]})
        else:
            raise invalid_argument("INVALID_PROMPT", f"{path} must be a string or a list of token ids", path)
    return prompts


def embed_params(task: str = "embed", **fields: Any) -> PoolingParams:
    """PoolingParams for ``task`` with the fields a request set (None: the model's default)."""
    params = PoolingParams(task=task, **{k: v for k, v in fields.items() if v is not None})
    try:
        params.verify()
    except ValueError as e:
        raise invalid_argument("INVALID_PARAMS", str(e), "dimensions" if "dimensions" in str(e) else "body") from e
    return params


def require_task(core: ServingCore, task: str, api: str) -> None:
    """TASK_NOT_SUPPORTED unless the served model runs ``task`` (PoolingParams.task)."""
    facts = core.facts()
    if facts.serves(task):
        return
    if not facts.is_text:
        hint = f"it takes {', '.join(facts.tensor_inputs)} tensors, not text; use /pooling"
    else:
        hint = f"it serves {', '.join(facts.tasks) or 'no pooling task'}"
    raise unsupported_task(api, core.model_name, hint)


async def run_embeddings(
    request: Request, prompts: list[PromptType], params: PoolingParams, field: str, priority: int = 0,
    task: str = "embeddings",
) -> list[PoolingRequestOutput]:
    """Admission and encoding of a call (same rules as gRPC EncodeAll); the model must serve
    ``params.task`` (``task`` names the API in the error)."""
    core = core_of(request)
    require_task(core, params.task or "embed", task)
    core.check_prompt_count(len(prompts), field)
    with core.admitted(deadline_of(request.scope)):
        return await core.encode(prompts, params, request_id_of(), deadline_of(request.scope), priority,
                                 field_of=lambda i: f"{field}[{i}]")


async def score_pairs(request: Request, queries: list[str], documents: list[str], priority: int,
                      truncate_prompt_tokens: int | None, api: str, activation: bool | None = None,
                      ) -> tuple[list[float], int]:
    """One score per (query, document) pair: a cross-encoder's (the "score" task) when the model
    has one, else the cosine similarity of the normalised embeddings (vLLM's bi-encoder scoring)."""
    core = core_of(request)
    if core.facts().serves("score"):
        prompts: list[PromptType] = [{"prompt": q, "text_pair": d} for q, d in zip(queries, documents)]
        params = embed_params("score", truncate_prompt_tokens=truncate_prompt_tokens, use_activation=activation)
        outputs = await run_embeddings(request, prompts, params, "documents", priority, task=api)
        return [float(vector(o)[0]) for o in outputs], token_count(outputs)
    texts = list(dict.fromkeys([*queries, *documents]))  # each distinct text embedded once
    params = embed_params(normalize=True, truncate_prompt_tokens=truncate_prompt_tokens)
    outputs = await run_embeddings(request, prompts_of(texts, "texts"), params, "texts", priority, task=api)
    vectors = {t: torch.nn.functional.normalize(vector(o), dim=0) for t, o in zip(texts, outputs)}
    return [float(vectors[q] @ vectors[d]) for q, d in zip(queries, documents)], token_count(outputs)


async def classify_prompts(request: Request, prompts: list[PromptType], priority: int, api: str, field: str,
                           activation: bool | None = None, truncate: bool | None = None,
                           ) -> tuple[list[torch.Tensor], tuple[str, ...], int]:
    """Class scores per prompt (the "classify" task) with the label names, and the token count."""
    core = core_of(request)
    params = embed_params("classify", use_activation=activation, truncate=truncate)
    outputs = await run_embeddings(request, prompts, params, field, priority, task=api)
    labels = core.facts().labels
    rows = [vector(o) for o in outputs]
    first = outputs[0].outputs
    if getattr(first, "labels", None):
        labels = tuple(first.labels)
    if not labels:
        labels = tuple(f"LABEL_{i}" for i in range(rows[0].numel()))
    return rows, labels, token_count(outputs)


def vector(out: PoolingRequestOutput) -> torch.Tensor:
    data = out.outputs.data if hasattr(out.outputs, "data") else out.outputs
    return data.detach().to("cpu", torch.float32).reshape(-1)


def encode_vector(vec: torch.Tensor, encoding_format: str) -> np.ndarray | str:
    """float: a float32 array (json_response writes it as numbers); base64: its little-endian bytes."""
    if encoding_format == "base64":
        return base64.b64encode(vec.numpy().astype("<f4", copy=False).tobytes()).decode("ascii")
    return np.ascontiguousarray(vec.numpy(), dtype=np.float32)


def encode_tensor(data: torch.Tensor, encoding_format: str) -> Any:
    """A pooled tensor of any shape as nested numbers, or base64 float32 bytes."""
    array = np.ascontiguousarray(data.detach().to("cpu", torch.float32).numpy(), dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(array.tobytes()).decode("ascii")
    return array


def token_count(outputs: Sequence[PoolingRequestOutput]) -> int:
    return sum(len(o.prompt_token_ids or ()) for o in outputs)


_ORJSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def json_response(content: Any, status_code: int = 200) -> Response:
    """JSON with numpy arrays written directly (orjson: float32 values in their shortest form,
    which read back as the same float32; ~35x faster than json.dumps of float lists)."""
    return Response(orjson.dumps(content, option=_ORJSON), status_code=status_code, media_type="application/json")
