"""Texts in, embeddings out, with per-request options and an optional similarity matrix.

Payload forms (all equivalent):
- JSON: ``{"texts": ["a", "b"], "normalize": true, "dimensions": 128,
  "truncate": true, "output_dtype": "float16", "similarity": true}``
  (a bare list of strings is accepted too);
- typed: ``poolstream.payloads.text_embedding.v1.TextEmbeddingRequest``;
- raw: ``application/json`` bytes of the JSON form, or ``text/plain`` with one
  text per line.

The answer comes back in the form the request came in: a typed request gets
a ``TextEmbeddingResponse``, a JSON (or raw) request gets a JSON object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from google.protobuf.message import Message

from poolstream.config import PoolstreamConfig
from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse, RawPayload
from poolstream.outputs import PoolingRequestOutput
from poolstream.payloads.text_embedding.v1 import text_embedding_pb2 as te_pb2
from poolstream.plugins.io_processors.interface import IOProcessor
from poolstream.pooling_params import PoolingParams
from poolstream.tensors import tensor_to_proto

MAX_TEXT_CHARS = 1_000_000
_DTYPES = {"float32", "float16", "binary"}
_PB_DTYPES = {
    te_pb2.EMBEDDING_DTYPE_UNSPECIFIED: "float32",
    te_pb2.EMBEDDING_DTYPE_FLOAT32: "float32",
    te_pb2.EMBEDDING_DTYPE_FLOAT16: "float16",
    te_pb2.EMBEDDING_DTYPE_BINARY: "binary",
}


@dataclass(frozen=True)
class TextEmbeddingInput:
    """A validated request. It travels with the call (no state on the plugin)."""

    texts: tuple[str, ...]
    normalize: bool | None = None
    dimensions: int | None = None
    truncate: bool | None = None
    output_dtype: str = "float32"
    similarity: bool = False
    typed: bool = False  # answer with a TextEmbeddingResponse message


@dataclass
class TextEmbeddingOutput:
    embeddings: torch.Tensor  # (n, dim) float32
    similarity: torch.Tensor | None
    token_counts: list[int]
    truncated: list[bool]
    output_dtype: str
    typed: bool


class TextEmbeddingProcessor(IOProcessor[TextEmbeddingInput, TextEmbeddingOutput]):
    input_types = (te_pb2.TextEmbeddingRequest.DESCRIPTOR.full_name,)
    output_types = (te_pb2.TextEmbeddingResponse.DESCRIPTOR.full_name,)
    input_media_types = ("application/json", "text/plain")
    # No per-request state on self: hooks of concurrent requests may overlap.
    concurrent_hooks = True

    def __init__(self, vllm_config: PoolstreamConfig):
        super().__init__(vllm_config)

    # -- request ---------------------------------------------------------
    def parse_request(self, request: Any) -> TextEmbeddingInput:
        data = request.data if isinstance(request, IOProcessorRequest) else request
        if isinstance(data, dict) and "data" in data and "texts" not in data:
            data = data["data"]  # offline form: {"data": {...}}
        if isinstance(data, te_pb2.TextEmbeddingRequest):
            return _validated(
                texts=list(data.texts),
                normalize=data.normalize if data.HasField("normalize") else None,
                dimensions=data.dimensions if data.HasField("dimensions") else None,
                truncate=data.truncate if data.HasField("truncate") else None,
                output_dtype=_PB_DTYPES.get(data.output_dtype, "float32"),
                similarity=data.similarity,
                typed=True,
            )
        if isinstance(data, Message):
            raise TypeError(f"text_embedding takes TextEmbeddingRequest, not {data.DESCRIPTOR.full_name}")
        if isinstance(data, RawPayload):
            data = _from_raw(data)
        if isinstance(data, list):
            data = {"texts": data}
        if not isinstance(data, dict):
            raise ValueError("Unable to parse the request data: expected {'texts': [...]} or a list of strings")
        unknown = set(data) - {"texts", "normalize", "dimensions", "truncate", "output_dtype", "similarity"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)} in text_embedding payload")
        dims = data.get("dimensions")
        return _validated(
            texts=data.get("texts"),
            normalize=_opt_bool(data, "normalize"),
            dimensions=None if dims is None else _int(dims, "dimensions"),
            truncate=_opt_bool(data, "truncate"),
            output_dtype=str(data.get("output_dtype") or "float32").lower(),
            similarity=bool(_opt_bool(data, "similarity")),
            typed=False,
        )

    def pre_process(
        self, prompt: TextEmbeddingInput, request_id: str | None = None, **kwargs: Any
    ) -> Sequence[str]:
        return list(prompt.texts)

    def validate_or_generate_params(  # type: ignore[override]
        self, params: PoolingParams | None = None, parsed_request: TextEmbeddingInput | None = None
    ) -> PoolingParams:
        # Payload options win over the request's generic params.
        request = parsed_request
        base = params or PoolingParams(task="embed")
        if request is None:
            return base
        return base.clone(
            task="embed",
            normalize=request.normalize if request.normalize is not None else base.normalize,
            dimensions=request.dimensions if request.dimensions is not None else base.dimensions,
            truncate=request.truncate if request.truncate is not None else base.truncate,
        )

    # -- response ----------------------------------------------------------
    def post_process(
        self,
        model_output: Sequence[PoolingRequestOutput],
        request_id: str | None = None,
        **kwargs: Any,
    ) -> TextEmbeddingOutput:
        request: TextEmbeddingInput | None = kwargs.get("parsed_request")
        embeddings = torch.stack([o.outputs.data.float().reshape(-1) for o in model_output]) if model_output \
            else torch.empty(0, 0)
        similarity = None
        if request is not None and request.similarity:
            unit = torch.nn.functional.normalize(embeddings, dim=-1)
            similarity = unit @ unit.T
        return TextEmbeddingOutput(
            embeddings=embeddings,
            similarity=similarity,
            token_counts=[len(o.prompt_token_ids) for o in model_output],
            truncated=[bool(getattr(o, "truncated", False)) for o in model_output],
            output_dtype=request.output_dtype if request else "float32",
            typed=request.typed if request else False,
        )

    def output_to_response(self, plugin_output: TextEmbeddingOutput) -> IOProcessorResponse:
        out = plugin_output
        if out.typed:
            msg = te_pb2.TextEmbeddingResponse(
                embeddings=tensor_to_proto(out.embeddings, out.output_dtype),
                token_counts=out.token_counts,
                truncated=out.truncated,
            )
            if out.similarity is not None:
                msg.similarity.CopyFrom(tensor_to_proto(out.similarity, "float32"))
            return IOProcessorResponse(data=msg)
        if out.output_dtype == "binary":
            embeddings: Any = [_packbits(row).tolist() for row in out.embeddings]
        elif out.output_dtype == "float16":
            embeddings = out.embeddings.half().float().tolist()
        else:
            embeddings = out.embeddings.tolist()
        body: dict[str, Any] = {
            "embeddings": embeddings,
            "dtype": out.output_dtype,
            "dimensions": int(out.embeddings.shape[1]) if out.embeddings.ndim == 2 else 0,
            "token_counts": out.token_counts,
            "truncated": out.truncated,
        }
        if out.similarity is not None:
            body["similarity"] = out.similarity.tolist()
        return IOProcessorResponse(data=body)


def _validated(texts: Any, normalize, dimensions, truncate, output_dtype, similarity, typed) -> TextEmbeddingInput:
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("'texts' must be a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] must be a string, got {type(t).__name__}")
        if not t:
            raise ValueError(f"texts[{i}] is empty")
        if len(t) > MAX_TEXT_CHARS:
            raise ValueError(f"texts[{i}] has {len(t)} characters; at most {MAX_TEXT_CHARS}")
    if dimensions is not None and dimensions < 1:
        raise ValueError(f"dimensions must be >= 1, got {dimensions}")
    if output_dtype not in _DTYPES:
        raise ValueError(f"output_dtype must be one of {sorted(_DTYPES)}, got {output_dtype!r}")
    return TextEmbeddingInput(tuple(texts), normalize, dimensions, truncate, output_dtype, similarity, typed)


def _from_raw(raw: RawPayload) -> Any:
    media = raw.media_type.split(";")[0].strip().lower()
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"raw payload is not UTF-8: {e}") from e
    if media in ("application/json", ""):
        try:
            return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
        except json.JSONDecodeError as e:
            raise ValueError(f"raw payload is not valid JSON: {e}") from e
        except RecursionError:
            raise ValueError("raw payload is nested too deeply to parse") from None
    if media == "text/plain":
        return {"texts": [line for line in text.splitlines() if line.strip()]}
    raise ValueError(f"unsupported media type {raw.media_type!r}; use application/json or text/plain")


def _no_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, which are not JSON (RFC 8259).
    raise ValueError(f"raw payload is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e999 parses as infinity.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"raw payload is not valid JSON: {text[:32]} is not a finite number")
    return value


def _opt_bool(data: dict, key: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"'{key}' must be true or false, got {value!r}")


def _int(value: Any, key: str) -> int:
    # JSON numbers arrive as floats through google.protobuf.Struct.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise ValueError(f"'{key}' must be an integer, got {value!r}")
    return int(value)


def _packbits(row: torch.Tensor) -> Any:
    import numpy as np

    return np.packbits((row > 0).numpy())
