"""Conversions between protobuf messages and poolstream's Python types.

Proto types stop here: handlers call these functions, and everything below
(plugins, engine) sees torch tensors, prompt dicts and dataclasses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from google.protobuf import struct_pb2, symbol_database
from google.protobuf.message import Message

from poolstream.entrypoints.protocol import RawPayload
from poolstream.inputs import PromptType
from poolstream.outputs import PoolingRequestOutput
from poolstream.pooling_params import PoolingParams
from poolstream.server.errors import echo, invalid_argument
from poolstream.tensors import OUTPUT_DTYPES, tensor_from_proto, tensor_to_proto
from poolstream.v1 import payload_pb2, pooling_pb2, tensor_pb2

DT = tensor_pb2.DType

def prompt_from_proto(msg: pooling_pb2.Prompt, field_path: str) -> PromptType:
    kind = msg.WhichOneof("input")
    if kind == "text":
        return msg.text
    if kind == "token_ids":
        if msg.token_ids.token_type_ids:
            return {"prompt_token_ids": list(msg.token_ids.ids),
                    "token_type_ids": list(msg.token_ids.token_type_ids)}
        return {"prompt_token_ids": list(msg.token_ids.ids)}
    if kind == "text_pair":
        return {"prompt": msg.text_pair.text, "text_pair": msg.text_pair.text_pair}
    if kind == "multi_modal":
        mm = {}
        for name, t in msg.multi_modal.multi_modal_data.items():
            path = f"{field_path}.multi_modal.multi_modal_data[{echo(name, 32)}]"
            try:
                mm[name] = tensor_from_proto(t, path)
            except ValueError as e:
                raise invalid_argument("INVALID_TENSOR", str(e), path) from e
        if not mm:
            raise invalid_argument("INVALID_PROMPT", "multi_modal_data is empty", f"{field_path}.multi_modal")
        return {"prompt_token_ids": list(msg.multi_modal.prompt_token_ids), "multi_modal_data": mm}
    raise invalid_argument("INVALID_PROMPT", "the prompt has no input set", field_path)


def _dtype_name(value: int) -> str:
    # Clients may send enum numbers this server does not define.
    return DT.Name(value) if value in DT.values() else str(value)


# PoolingTask enum -> PoolingParams.task (vLLM's names).
TASK_NAMES = {
    pooling_pb2.POOLING_TASK_EMBED: "embed",
    pooling_pb2.POOLING_TASK_CLASSIFY: "classify",
    pooling_pb2.POOLING_TASK_SCORE: "score",
    pooling_pb2.POOLING_TASK_TOKEN_EMBED: "token_embed",
    pooling_pb2.POOLING_TASK_TOKEN_CLASSIFY: "token_classify",
    pooling_pb2.POOLING_TASK_EMBED_SPARSE: "embed_sparse",
}
TASK_ENUMS = {name: value for value, name in TASK_NAMES.items()}


def params_from_proto(msg: pooling_pb2.PoolingParams | None, task: str | None = None) -> PoolingParams | None:
    """Decode PoolingParams; None when the request did not set the field.

    ``task`` is the call's default (e.g. "encode", "plugin"); the message's own
    ``task`` wins when set."""
    if msg is None:
        return None
    if msg.task != pooling_pb2.POOLING_TASK_UNSPECIFIED:
        if msg.task not in TASK_NAMES:
            raise invalid_argument("INVALID_PARAMS", f"unknown task {msg.task}", "params.task")
        task = TASK_NAMES[msg.task]
    if msg.output_dtype not in OUTPUT_DTYPES:
        raise invalid_argument(
            "INVALID_PARAMS",
            f"output_dtype {_dtype_name(msg.output_dtype)} is not supported "
            "(use FLOAT32, FLOAT16, BFLOAT16 or BINARY)",
            "params.output_dtype",
        )
    params = PoolingParams(
        task=task,
        normalize=msg.normalize if msg.HasField("normalize") else None,
        dimensions=msg.dimensions if msg.HasField("dimensions") else None,
        truncate=msg.truncate if msg.HasField("truncate") else None,
        truncate_prompt_tokens=msg.truncate_prompt_tokens if msg.HasField("truncate_prompt_tokens") else None,
        output_dtype=OUTPUT_DTYPES[msg.output_dtype],  # type: ignore[arg-type]
        use_activation=msg.use_activation if msg.HasField("use_activation") else None,
        prompt_name=msg.prompt_name if msg.HasField("prompt_name") else None,
        sparse_top_k=msg.sparse_top_k if msg.HasField("sparse_top_k") else None,
    )
    if msg.include_float_values:
        params.extra_kwargs = {"include_float_values": True}
    try:
        params.verify()
    except ValueError as e:
        raise invalid_argument("INVALID_PARAMS", str(e), "params") from e
    return params


def output_to_proto(out: PoolingRequestOutput, params: PoolingParams | None) -> pooling_pb2.PoolingRequestOutput:
    output_dtype = params.output_dtype if params else "float32"
    include = bool(params and params.extra_kwargs and params.extra_kwargs.get("include_float_values"))
    data = out.outputs.data if hasattr(out.outputs, "data") else out.outputs
    pooled = pooling_pb2.PoolingOutput(data=tensor_to_proto(data, output_dtype, include))
    labels = getattr(out.outputs, "labels", None)
    if labels:
        pooled.labels.extend(labels)
    indices = getattr(out.outputs, "indices", None)
    if indices is not None:
        pooled.indices.extend(int(i) for i in indices.tolist())
        pooled.tokens.extend(out.outputs.tokens or ())
    return pooling_pb2.PoolingRequestOutput(
        request_id=out.request_id,
        outputs=pooled,
        prompt_token_ids=out.prompt_token_ids,
        num_cached_tokens=out.num_cached_tokens,
        finished=out.finished,
        truncated=out.truncated,
    )


def payload_from_proto(msg: payload_pb2.PluginPayload, field_path: str = "data",
                       allow_non_finite: bool = False) -> Any:
    """Decode a PluginPayload into what the plugin's ``parse_request`` sees in ``.data``."""
    kind = msg.WhichOneof("kind")
    if kind == "json":
        return struct_to_python(msg.json, f"{field_path}.json", allow_non_finite)
    if kind == "typed":
        type_name = msg.typed.TypeName()
        try:
            cls = symbol_database.Default().GetSymbol(type_name)
        except KeyError:
            raise invalid_argument(
                "UNKNOWN_PAYLOAD_TYPE",
                f"unknown payload type {echo(type_name, 128)}: the server knows no such message "
                "(GetServerInfo lists plugin.input_types)",
                f"{field_path}.typed.type_url",
            ) from None
        message = cls()
        try:
            unpacked = msg.typed.Unpack(message)
        except Exception as e:  # malformed bytes: DecodeError
            raise invalid_argument(
                "INVALID_PAYLOAD", f"cannot decode {echo(type_name, 128)}: {e}", f"{field_path}.typed") from e
        if not unpacked:
            raise invalid_argument("INVALID_PAYLOAD", f"cannot unpack {echo(type_name, 128)}", f"{field_path}.typed")
        # Drop the packed copy: a large payload (a raster) would otherwise be held twice.
        msg.ClearField("typed")
        return message
    if kind == "raw":
        raw = RawPayload(media_type=msg.raw.media_type, data=msg.raw.data)
        msg.ClearField("raw")
        return raw
    raise invalid_argument(
        "INVALID_PAYLOAD", "the request has no payload: set data.json, data.typed or data.raw", field_path
    )


def struct_to_python(msg: struct_pb2.Struct, field_path: str = "data.json",
                     allow_non_finite: bool = False) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as plain Python (what ``json_format.MessageToDict`` gives).

    Unlike MessageToDict, a NaN or +/-Infinity number (which the binary form can carry
    and JSON cannot) is the client's error: INVALID_ARGUMENT NON_FINITE_INPUT naming where
    it is, unless the server allows non-finite inputs. Depth needs no bound here: the
    protobuf parser already refused messages nested deeper than its recursion limit."""
    try:
        return _struct(msg, allow_non_finite)
    except _NonFinite as e:
        path = field_path + "".join(reversed(e.parts))
        raise invalid_argument(
            "NON_FINITE_INPUT",
            f"{path} is {e.value}: JSON numbers must be finite (the server refuses NaN and "
            "Infinity unless started with --allow-non-finite-inputs)", path) from None


class _NonFinite(Exception):
    def __init__(self, value: float):
        self.value = value
        self.parts: list[str] = []  # path parts, innermost first


def _key(key: str) -> str:
    return f".{key}" if key.isidentifier() and len(key) <= 32 else f"[{echo(key, 32)}]"


def _struct(msg: struct_pb2.Struct, allow: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in msg.fields.items():
        try:
            out[key] = _value(value, allow)
        except _NonFinite as e:
            e.parts.append(_key(key))
            raise
    return out


def _value(v: struct_pb2.Value, allow: bool) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        x = v.number_value
        if not allow and not math.isfinite(x):
            raise _NonFinite(x)
        return x
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _struct(v.struct_value, allow)
    if kind == "list_value":
        items = []
        for i, item in enumerate(v.list_value.values):
            try:
                items.append(_value(item, allow))
            except _NonFinite as e:
                e.parts.append(f"[{i}]")
                raise
        return items
    return None  # null_value, or no kind set


def payload_to_proto(data: Any) -> payload_pb2.PluginPayload:
    """Encode a plugin's response data (dict/list -> JSON, message -> Any, bytes -> raw)."""
    if isinstance(data, Message):
        payload = payload_pb2.PluginPayload()
        payload.typed.Pack(data)
        return payload
    if isinstance(data, RawPayload):
        return payload_pb2.PluginPayload(raw=payload_pb2.RawPayload(media_type=data.media_type, data=data.data))
    if isinstance(data, (bytes, bytearray, memoryview)):
        return payload_pb2.PluginPayload(
            raw=payload_pb2.RawPayload(media_type="application/octet-stream", data=bytes(data))
        )
    if isinstance(data, dict):
        s = struct_pb2.Struct()
        s.update(_jsonable(data))
        return payload_pb2.PluginPayload(json=s)
    # Lists and scalars: wrap so the JSON form stays an object.
    s = struct_pb2.Struct()
    s.update({"value": _jsonable(data)})
    return payload_pb2.PluginPayload(json=s)


def _jsonable(value: Any) -> Any:
    """Turn tensors, numpy values and dataclasses into JSON-compatible values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value
