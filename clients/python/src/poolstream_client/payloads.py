"""Building and reading `poolstream.v1.PluginPayload` (a plugin's input or output).

A payload is JSON (`google.protobuf.Struct`, what vLLM's `/pooling` takes as
`data`), a typed protobuf message in an `Any` (its type must be one the server
lists in `GetServerInfo.plugin.input_types`), or raw bytes with a media type.
"""

from __future__ import annotations

import dataclasses
import json as _json
from collections.abc import Mapping
from typing import Any

import betterproto2

from . import tensors
from ._messages import import_all, message_class, v1, wkt

__all__ = [
    "PayloadLike",
    "as_payload",
    "from_document",
    "json",
    "kind",
    "raw",
    "to_jsonable",
    "typed",
    "value",
]

#: What the clients accept wherever a payload goes.
PayloadLike = v1.PluginPayload | Mapping[str, Any] | betterproto2.Message | bytes | v1.RawPayload


def json(data: Mapping[str, Any]) -> v1.PluginPayload:
    """A JSON payload: the plugin receives `data` as a dict."""
    return v1.PluginPayload(json=wkt.Struct.from_dict(dict(data)))


def typed(message: betterproto2.Message) -> v1.PluginPayload:
    """A typed payload: `message` packed in an Any
    (`type.googleapis.com/<full name>`)."""
    if isinstance(message, wkt.Any):
        return v1.PluginPayload(typed=message)
    import_all()
    return v1.PluginPayload(typed=wkt.Any.pack(message))


def raw(data: bytes, media_type: str = "application/octet-stream") -> v1.PluginPayload:
    """A raw payload: bytes with their media type (e.g. "image/tiff")."""
    return v1.PluginPayload(raw=v1.RawPayload(media_type=media_type, data=bytes(data)))


def as_payload(value: PayloadLike, media_type: str | None = None) -> v1.PluginPayload:
    """Any PayloadLike as a PluginPayload: a dict is JSON, a message is typed,
    bytes are raw (`media_type`, default application/octet-stream)."""
    if isinstance(value, v1.PluginPayload):
        return value
    if isinstance(value, v1.RawPayload):
        return v1.PluginPayload(raw=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return raw(bytes(value), media_type or "application/octet-stream")
    if isinstance(value, Mapping):
        return json(value)
    if isinstance(value, betterproto2.Message):
        return typed(value)
    raise TypeError(f"cannot send a {type(value).__name__} as a plugin payload")


def from_document(document: Mapping[str, Any], type_name: str | None = None) -> v1.PluginPayload:
    """A payload from a JSON document: typed when `type_name` is given (the
    document is that message in protobuf JSON) or when it has an `@type` key
    (protobuf JSON of an Any), otherwise JSON."""
    if type_name:
        return typed(message_class(type_name).from_dict(dict(document)))
    if "@type" in document:
        import_all()
        return v1.PluginPayload(typed=wkt.Any.from_dict(dict(document)))
    return json(document)


def kind(payload: v1.PluginPayload) -> str | None:
    """ "json", "typed", "raw", or None when the payload is empty."""
    name, _ = betterproto2.which_one_of(payload, "kind")
    return name or None


def value(payload: v1.PluginPayload) -> dict[str, Any] | betterproto2.Message | v1.RawPayload | None:
    """The payload's content: a dict (JSON), the unpacked message (typed), or
    the RawPayload."""
    which = kind(payload)
    if which == "json":
        return payload.json.to_dict()
    if which == "typed":
        import_all()
        return payload.typed.unpack()
    if which == "raw":
        return payload.raw
    return None


def to_jsonable(obj: Any, *, decode_tensors: bool = False) -> Any:
    """A JSON-serialisable form of a payload value or message (protobuf JSON,
    snake_case keys; a typed message gets its `@type`).

    With `decode_tensors`, every `poolstream.v1.Tensor` becomes
    `{"dtype", "shape", "values"}` with nested lists instead of base64 bytes.
    """
    if isinstance(obj, v1.PluginPayload):
        which = kind(obj)
        if which == "typed":  # keep the "@type"
            return to_jsonable(obj.typed, decode_tensors=decode_tensors)
        return to_jsonable(value(obj), decode_tensors=decode_tensors)
    if isinstance(obj, v1.Tensor) and decode_tensors:
        return {
            "dtype": tensors.dtype_name(obj.dtype),
            "shape": list(obj.shape),
            "values": tensors.to_numpy(obj).tolist(),
        }
    if isinstance(obj, wkt.Any):
        import_all()
        inner = obj.unpack()
        return {"@type": obj.type_url, **(to_jsonable(inner, decode_tensors=decode_tensors) or {})}
    if isinstance(obj, betterproto2.Message):
        out = obj.to_dict(casing=betterproto2.Casing.SNAKE)
        if decode_tensors:
            for f in dataclasses.fields(obj):
                if f.name not in out:
                    continue
                v = getattr(obj, f.name)
                if isinstance(v, betterproto2.Message):
                    out[f.name] = to_jsonable(v, decode_tensors=True)
                elif isinstance(v, list) and v and isinstance(v[0], betterproto2.Message):
                    out[f.name] = [to_jsonable(x, decode_tensors=True) for x in v]
                elif isinstance(v, dict) and v and isinstance(next(iter(v.values())), betterproto2.Message):
                    out[f.name] = {k: to_jsonable(x, decode_tensors=True) for k, x in v.items()}
        return out
    if isinstance(obj, (dict, list, str, int, float, bool)) or obj is None:
        return _json.loads(_json.dumps(obj))
    raise TypeError(f"cannot convert a {type(obj).__name__} to JSON")
