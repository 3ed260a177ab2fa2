"""The wire between front ends and the engine process: ZeroMQ frames holding msgpack.

Every message is two frames, ``[kind, body]`` (the engine's ROUTER socket adds the
sender's identity in front). ``body`` is msgpack (msgspec); a tensor travels as one
msgpack extension holding ``(dtype, shape)`` and its raw bytes, never as a list of
numbers. Deadlines cross as ``time.monotonic()`` values: CLOCK_MONOTONIC is one clock
for every process of a machine.

Front end -> engine:

- ``HELLO`` ``{"index", "pid"}``: a front end connected; the engine answers ``WELCOME``.
- ``SUBMIT`` ``(gid, request_id, prompts, params, priority, deadline)``: a prompt group
  (engine/group.py); prompt ``i`` runs as ``f"{request_id}-{i}"``. Text prompts arrive
  already tokenized (``{"prompt_token_ids": [...]}``) where the front end could.
- ``ABORT`` ``gid``: the group's caller went away; unfinished prompts are aborted.

Engine -> front end:

- ``WELCOME`` ``{model info, pid}``.
- ``RESULTS`` ``[(gid, index, ok, payload), ...]``: every result of one engine batch for
  this front end, in one message. ``payload`` is an output
  ``(request_id, data, prompt_token_ids, truncated, timing, num_cached_tokens)`` or an
  error ``(error class name, message, retry_after_s)``.
- ``STATS`` ``{engine stats..., "estimate_wait_s"}``: every ``STATS_INTERVAL_S`` (admission
  estimates, GetServerInfo and health read it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import numpy as np
import torch

from poolstream.engine.errors import (
    DeadlineExceededError,
    EngineDeadError,
    EngineError,
    EngineOverloadedError,
    InvalidPromptError,
    RequestAbortedError,
)
from poolstream.outputs import PoolingOutput, PoolingRequestOutput, RequestTiming
from poolstream.pooling_params import PoolingParams

HELLO, SUBMIT, ABORT = b"H", b"S", b"A"
WELCOME, RESULTS, STATS = b"W", b"R", b"T"
STATS_INTERVAL_S = 0.1

_TENSOR_EXT = 1
_NP_OF_TORCH = {
    torch.float32: "<f4", torch.float16: "<f2", torch.float64: "<f8", torch.int64: "<i8", torch.int32: "<i4",
    torch.int16: "<i2", torch.int8: "i1", torch.uint8: "u1", torch.bool: "?", torch.bfloat16: "<i2",
}
_TORCH_OF_NAME = {str(t).removeprefix("torch."): t for t in _NP_OF_TORCH}


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        raw = (t.view(torch.int16) if t.dtype is torch.bfloat16 else t).numpy().tobytes()
        header = msgspec.msgpack.encode((str(t.dtype).removeprefix("torch."), list(t.shape)))
        return msgspec.msgpack.Ext(_TENSOR_EXT, len(header).to_bytes(4, "little") + header + raw)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    raise NotImplementedError(f"cannot send a {type(obj).__name__} to the engine process")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _TENSOR_EXT:
        raise ValueError(f"unknown msgpack extension {code}")
    n = int.from_bytes(data[:4], "little")
    name, shape = msgspec.msgpack.decode(data[4:4 + n])
    dtype = _TORCH_OF_NAME[name]
    raw = bytearray(data[4 + n:])  # writable: the tensor shares the buffer
    if not raw:
        return torch.empty(shape, dtype=dtype)
    if dtype is torch.bfloat16:
        return torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).reshape(shape)
    return torch.frombuffer(raw, dtype=dtype).reshape(shape)


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
encode = _encoder.encode
decode = _decoder.decode


def params_to_wire(params: PoolingParams | None) -> dict[str, Any] | None:
    return None if params is None else dataclasses.asdict(params)


def params_from_wire(raw: dict[str, Any] | None) -> PoolingParams | None:
    return None if raw is None else PoolingParams(**raw)


def output_to_wire(out: PoolingRequestOutput[Any]) -> tuple[Any, ...]:
    t = out.timing
    data = out.outputs.data if isinstance(out.outputs, PoolingOutput) else out.outputs
    return (out.request_id, data, out.prompt_token_ids, out.truncated,
            None if t is None else (t.arrival, t.started, t.finished), out.num_cached_tokens)


def output_from_wire(raw: Any) -> PoolingRequestOutput[Any]:
    request_id, data, ids, truncated, timing, cached = raw
    return PoolingRequestOutput(
        request_id=request_id, outputs=PoolingOutput(data=data), prompt_token_ids=ids,
        num_cached_tokens=cached, finished=True, truncated=truncated,
        timing=None if timing is None else RequestTiming(*timing))


_ERRORS: dict[str, type[EngineError]] = {
    cls.__name__: cls for cls in (InvalidPromptError, DeadlineExceededError, RequestAbortedError,
                                  EngineDeadError, EngineError)
}


def error_to_wire(exc: BaseException) -> tuple[str, str, float | None]:
    if isinstance(exc, EngineOverloadedError):
        return ("EngineOverloadedError", str(exc), exc.retry_after_s)
    name = type(exc).__name__
    if name not in _ERRORS:  # anything else the engine raised is a model failure
        return ("EngineError", f"{name}: {exc}", None)
    return (name, str(exc), None)


def error_from_wire(raw: Any) -> BaseException:
    name, message, retry_after_s = raw
    if name == "EngineOverloadedError":
        return EngineOverloadedError(message, retry_after_s=retry_after_s or 0.05)
    return _ERRORS.get(name, EngineError)(message)
