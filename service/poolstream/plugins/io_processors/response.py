"""A plugin's response, made sendable: what ``output_to_response`` returned, as poolstream's
``IOProcessorResponse`` whose ``data`` is JSON-able, a protobuf message or raw bytes.

vLLM plugins return pydantic models (``IOProcessorResponse(data=<pydantic model>)``),
which vLLM's server serialises the way FastAPI does (``model_dump`` in JSON mode). This
module does the same for gRPC, so the client gets the JSON vLLM would have sent, and
turns a model into a typed ``google.protobuf.Any`` where it maps to a registered
message. Anything that cannot be encoded raises ``ResponseEncodingError`` naming the
path and type, which the server reports as the plugin's failure (never UNKNOWN).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import math
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import numpy as np
import torch
from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

from poolstream.entrypoints.protocol import IOProcessorResponse, RawPayload


class ResponseEncodingError(TypeError):
    """The plugin's response holds a value that has no JSON, protobuf or raw form."""


def normalize_response(
    response: Any, request_id: str, output_types: Sequence[str] = ()
) -> IOProcessorResponse:
    """``output_to_response``'s result as a sendable ``IOProcessorResponse`` (request id filled)."""
    if isinstance(response, IOProcessorResponse):
        result = response
    elif _is_response_like(response):  # vLLM's own (pydantic) IOProcessorResponse
        kwargs: dict[str, Any] = {"data": response.data, "request_id": getattr(response, "request_id", None)}
        created = getattr(response, "created_at", None)
        if isinstance(created, int):
            kwargs["created_at"] = created
        result = IOProcessorResponse(**kwargs)
    else:
        result = IOProcessorResponse(data=response)
    if not result.request_id:
        result.request_id = request_id
    result.data = encode_data(result.data, output_types)
    return result


def _is_response_like(value: Any) -> bool:
    return (
        type(value).__name__ == "IOProcessorResponse"
        and hasattr(value, "data")
        and not isinstance(value, (Mapping, Message))
    )


def encode_data(data: Any, output_types: Sequence[str] = ()) -> Any:
    """Top-level ``data``: a message, ``RawPayload`` or bytes stay as they are; a pydantic
    model or dataclass that parses into one of ``output_types`` becomes that message;
    everything else becomes JSON-able values."""
    if isinstance(data, (Message, RawPayload)):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if output_types and (_is_pydantic(data) or dataclasses.is_dataclass(data)):
        message = _as_registered_message(jsonable(data), output_types)
        if message is not None:
            return message
    return jsonable(data)


def _as_registered_message(value: Any, output_types: Sequence[str]) -> Message | None:
    """The first of ``output_types`` that ``value`` parses into exactly (unset optional
    fields, i.e. None, aside), or None: then nothing would be lost sending it as JSON."""
    if not isinstance(value, dict):
        return None
    value = _without_none(value)
    pool = symbol_database.Default()
    for name in output_types:
        try:
            cls = pool.GetSymbol(name)
            return json_format.ParseDict(value, cls(), ignore_unknown_fields=False)
        except (KeyError, json_format.ParseError, TypeError, ValueError):
            continue
    return None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _is_pydantic(value: Any) -> bool:
    return not isinstance(value, type) and callable(getattr(value, "model_dump", None))


def jsonable(value: Any, path: str = "data") -> Any:
    """FastAPI's ``jsonable_encoder`` rules, plus tensors and arrays (as nested lists)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN/Infinity
    if _is_pydantic(value):
        try:
            dumped = value.model_dump(mode="json")
        except Exception:  # a field pydantic cannot serialise (a tensor, ...): dump, then encode
            dumped = value.model_dump()
        return jsonable(dumped, path)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, path)
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist(), path)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), path)
    if isinstance(value, np.generic):
        return jsonable(value.item(), path)
    if isinstance(value, Mapping):
        return {_key(k, path): jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), f"{path}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")  # what FastAPI does (base64 text from plugins stays text)
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (uuid.UUID, PurePath)):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Message):
        return json_format.MessageToDict(value)
    raise ResponseEncodingError(
        f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which has no JSON form"
    )


def _key(key: Any, path: str) -> str:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return str(key)
    if isinstance(key, enum.Enum):
        return str(key.value)
    raise ResponseEncodingError(f"{path} has a key of type {type(key).__qualname__}")
