"""Synchronous and asyncio clients for poolstream.v1.PoolingService.

Both speak grpcio (`grpc` / `grpc.aio` channels) and use the betterproto2
dataclasses generated from protos/ as request and response types. What they
do (chunking under the server's limits, retries honouring RetryInfo,
progress, keyword checking) is written once, in ``_plans``; each class only
carries out the plan's calls and sleeps its own way.

Limits come from ``GetServerInfo``, fetched once on the first call that needs
them: requests are split to fit ``max_prompts_per_request``, the queue and
``max_receive_message_bytes``, and the channel for results is opened with a
receive limit equal to the server's ``max_send_message_bytes`` (gRPC's 4 MiB
default would refuse a large plugin result after the server computed it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Self

import betterproto2
import grpc
import grpc.aio
import numpy as np

from . import payloads, tensors
from ._messages import v1
from ._plans import (
    NO_RETRY,
    Plan,
    RetryPolicy,
    ServerLimits,
    Sleep,
    Start,
    Wait,
    check_keywords,
    encode_all_plan,
    pooling_params,
    unary_plan,
)
from .errors import FieldViolation, PoolstreamError
from .progress import progress_bar

__all__ = ["AsyncClient", "Client", "FieldViolation", "PoolstreamError", "ProcessResult", "PromptLike",
           "RetryPolicy", "ServerLimits", "pooling_params"]

SERVICE = "/poolstream.v1.PoolingService/"

#: A prompt: text, token ids, named tensors (multi-modal), or a Prompt.
PromptLike = str | Sequence[int] | v1.Prompt | v1.TokenIds | v1.MultiModalPrompt

_UNARY = {
    "GetServerInfo": (v1.GetServerInfoRequest, v1.GetServerInfoResponse),
    "Process": (v1.ProcessRequest, v1.ProcessResponse),
    "EncodeAll": (v1.EncodeAllRequest, v1.EncodeAllResponse),
}
_STREAM = {
    "ProcessStream": (v1.ProcessStreamRequest, v1.ProcessStreamResponse),
    "Encode": (v1.EncodeRequest, v1.EncodeResponse),
}
_RESPONSE_SLACK = 64 * 1024  # framing and trailers beyond the server's send limit
_ENCODE_KW = ("params", "request_id", "priority", "timeout")
_BULK_KW = (*_ENCODE_KW, "chunk_size", "max_in_flight", "progress")
_PROCESS_KW = ("params", "request_id", "priority", "media_type", "timeout")
_STREAM_KW = ("detail", *_PROCESS_KW)


@dataclasses.dataclass
class ProcessResult:
    """A plugin result: the ProcessResponse, with its payload decoded."""

    response: v1.ProcessResponse

    @property
    def request_id(self) -> str:
        return self.response.request_id

    @property
    def usage(self) -> v1.Usage:
        return self.response.usage or v1.Usage()

    @property
    def kind(self) -> str | None:
        """ "json", "typed" or "raw"."""
        return payloads.kind(self.response.data) if self.response.data else None

    @property
    def value(self) -> dict[str, Any] | betterproto2.Message | v1.RawPayload | None:
        """A dict (JSON result), the unpacked message (typed), or the RawPayload."""
        return payloads.value(self.response.data) if self.response.data else None


def as_prompt(p: PromptLike) -> v1.Prompt:
    if isinstance(p, v1.Prompt):
        return p
    if isinstance(p, str):
        return v1.Prompt(text=p)
    if isinstance(p, v1.TokenIds):
        return v1.Prompt(token_ids=p)
    if isinstance(p, v1.MultiModalPrompt):
        return v1.Prompt(multi_modal=p)
    return v1.Prompt(token_ids=v1.TokenIds(ids=[int(i) for i in p]))


def _stack(responses: Iterable[v1.EncodeResponse]) -> np.ndarray:
    rows = []
    for r in responses:
        if r.error is not None:
            raise PoolstreamError.from_status(r.error, r.index)
        rows.append(tensors.to_numpy(r.output.outputs.data))
    return np.stack(rows) if rows else np.zeros((0,), dtype=np.float32)


class _Core:
    """What both clients share: settings, request building, the plans."""

    def __init__(self, target: str, timeout: float | None, metadata: Sequence[tuple[str, str]] | None,
                 token: str | None, credentials: grpc.ChannelCredentials | None,
                 options: Sequence[tuple[str, Any]], retry: RetryPolicy | None):
        self.target = target
        self.timeout = timeout
        self.metadata = list(metadata or [])
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))
        self.credentials = credentials
        self.options = list(options)
        self.retry = RetryPolicy() if retry is None else retry
        self.limits: ServerLimits | None = None
        self._info: v1.GetServerInfoResponse | None = None

    def _kw(self, timeout: float | None) -> dict[str, Any]:
        return {"timeout": self.timeout if timeout is None else timeout, "metadata": self.metadata or None}

    def _call_options(self) -> list[tuple[str, Any]]:
        """The results channel's options: the server's send limit as our receive limit
        (unless the caller set one)."""
        options = list(self.options)
        if self.limits is not None and not any(k == "grpc.max_receive_message_length" for k, _ in options):
            options.append(("grpc.max_receive_message_length",
                            self.limits.max_send_message_bytes + _RESPONSE_SLACK))
        return options

    def _set_info(self, info: v1.GetServerInfoResponse) -> None:
        self._info = info
        self.limits = ServerLimits.from_info(info)

    @staticmethod
    def _encode_request(prompts: Iterable[PromptLike], kw: dict[str, Any], message: Any = v1.EncodeRequest) -> Any:
        extra = {k: v for k, v in kw.items() if k not in _BULK_KW}
        return message(
            request_id=kw.get("request_id", ""),
            prompts=[as_prompt(p) for p in prompts],
            params=pooling_params(kw.get("params"), **extra),
            priority=kw.get("priority", 0),
        )

    def _encode_all_plan(self, prompts: Sequence[PromptLike], kw: dict[str, Any], where: str) -> Plan:
        check_keywords(kw, _BULK_KW, where)
        assert self.limits is not None
        extra = {k: v for k, v in kw.items() if k not in _BULK_KW}
        params = pooling_params(kw.get("params"), **extra)
        prompts = [as_prompt(p) for p in prompts]
        request_id = kw.get("request_id", "")
        chunked = len(prompts) > 1

        def make(part: list[v1.Prompt], number: int) -> v1.EncodeAllRequest:
            rid = f"{request_id}-c{number}" if request_id and chunked and number else request_id
            return v1.EncodeAllRequest(request_id=rid, prompts=part, params=params, priority=kw.get("priority", 0))

        bar = progress_bar(len(prompts), kw.get("progress"))
        try:
            return (yield from encode_all_plan(prompts, make, self.limits, self.retry,
                                               chunk_size=kw.get("chunk_size"),
                                               max_in_flight=kw.get("max_in_flight") or 2, progress=bar))
        finally:
            if bar is not None:
                bar.close()

    def _process_plan(self, payload: payloads.PayloadLike, kw: dict[str, Any], where: str) -> Plan:
        check_keywords(kw, _PROCESS_KW, where)
        request = v1.ProcessRequest(
            request_id=kw.get("request_id", ""),
            data=payloads.as_payload(payload, kw.get("media_type")),
            priority=kw.get("priority", 0),
            params=pooling_params(kw.get("params"), **{k: v for k, v in kw.items() if k not in _PROCESS_KW}),
        )
        return ProcessResult((yield from unary_plan("Process", request, self.retry)))

    @staticmethod
    def _stream_request(payload: payloads.PayloadLike, kw: dict[str, Any], where: str) -> v1.ProcessStreamRequest:
        check_keywords(kw, _STREAM_KW, where)
        return v1.ProcessStreamRequest(
            request_id=kw.get("request_id", ""),
            data=payloads.as_payload(payload, kw.get("media_type")),
            priority=kw.get("priority", 0),
            params=pooling_params(kw.get("params"), **{k: v for k, v in kw.items() if k not in _STREAM_KW}),
            detail=kw.get("detail", v1.StreamDetail.UNSPECIFIED),
        )


def _callables(channel: Any) -> dict[str, Any]:
    out = {}
    for name, (req, resp) in _UNARY.items():
        out[name] = channel.unary_unary(SERVICE + name, req.SerializeToString, resp.FromString)
    for name, (req, resp) in _STREAM.items():
        out[name] = channel.unary_stream(SERVICE + name, req.SerializeToString, resp.FromString)
    return out


class Client(_Core):
    """Blocking client. `target` is "host:port"; use as a context manager or call close().

    Errors are raised as :class:`PoolstreamError` (code, ErrorInfo reason and metadata,
    BadRequest field violations, RetryInfo delay). Refused calls are retried per
    ``retry`` (a :class:`RetryPolicy`; ``RetryPolicy(max_attempts=1)`` turns retries off).
    Unknown keyword arguments raise TypeError.
    """

    def __init__(self, target: str, *, timeout: float | None = None,
                 metadata: Sequence[tuple[str, str]] | None = None, token: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (),
                 channel: grpc.Channel | None = None, retry: RetryPolicy | None = None):
        super().__init__(target, timeout, metadata, token, credentials, options, retry)
        self._own = channel is None
        self.channel = channel if channel is not None else self._open(self.options)
        self._stubs = _callables(self.channel)
        self._call_channel: grpc.Channel | None = None if self._own else self.channel
        self._call_stubs: dict[str, Any] | None = None if self._own else self._stubs
        self._lock = threading.Lock()

    def _open(self, options: list[tuple[str, Any]]) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(self.target, self.credentials, options=options)
        return grpc.insecure_channel(self.target, options=options)

    def _ready(self) -> dict[str, Any]:
        """The stubs for bulk calls: GetServerInfo first (once), then the results channel."""
        if self._call_stubs is None or self.limits is None:
            with self._lock:
                if self.limits is None:
                    self._set_info(self._run(unary_plan("GetServerInfo", v1.GetServerInfoRequest(), self.retry),
                                             self._stubs, None))
                if self._call_stubs is None:
                    self._call_channel = self._open(self._call_options())
                    self._call_stubs = _callables(self._call_channel)
        assert self._call_stubs is not None
        return self._call_stubs

    def _run(self, plan: Plan, stubs: dict[str, Any], timeout: float | None) -> Any:
        """Carry out a plan with blocking calls (``future()`` for calls in flight together)."""
        started: list[Any] = []
        kw = self._kw(timeout)
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    op = plan.throw(error) if error is not None else plan.send(value)
                except StopIteration as stop:
                    return stop.value
                value = error = None
                try:
                    if isinstance(op, Start):
                        value = stubs[op.method].future(op.request, **kw)
                        started.append(value)
                    elif isinstance(op, Wait):
                        value = op.handle.result()
                    elif isinstance(op, Sleep):
                        time.sleep(op.seconds)
                except grpc.RpcError as e:
                    error = PoolstreamError.from_rpc_error(e)
        finally:
            for call in started:
                call.cancel()  # no-op for finished calls
            plan.close()

    def close(self) -> None:
        if self._call_channel is not None and self._call_channel is not self.channel:
            self._call_channel.close()
        if self._own:
            self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (grpc.FutureTimeoutError otherwise)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def server_info(self, *, timeout: float | None = None) -> v1.GetServerInfoResponse:
        info = self._run(unary_plan("GetServerInfo", v1.GetServerInfoRequest(), NO_RETRY), self._stubs, timeout)
        self._set_info(info)
        return info

    def encode(self, prompts: Iterable[PromptLike], **kwargs: Any) -> Iterator[v1.EncodeResponse]:
        """Stream one EncodeResponse per prompt over one Encode call, in completion order
        (each carries its `index`; a failed prompt has `error` set). Keywords: params,
        request_id, priority, timeout and PoolingParams fields. For many prompts use
        encode_all() or embed(), which split them under the server's limits."""
        check_keywords(kwargs, _ENCODE_KW, "encode")  # now, not at the first next()
        request = self._encode_request(prompts, kwargs)
        return self._stream("Encode", request, kwargs.get("timeout"))

    def _stream(self, method: str, request: Any, timeout: float | None) -> Iterator[Any]:
        stub = self._ready()[method]
        try:
            yield from stub(request, **self._kw(timeout))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    def encode_all(self, prompts: Sequence[PromptLike], **kwargs: Any) -> list[v1.EncodeResponse]:
        """Every prompt's EncodeResponse in prompt order (`index` is the prompt's position).

        Any number of prompts: they are sent in EncodeAll calls under the server's limits,
        ``max_in_flight`` (2) at once, with a progress bar on a terminal (``progress=``
        True/False forces it). Refused calls and prompts are retried after their RetryInfo
        delay. A prompt's own error stays in its response. Keywords: params, request_id,
        priority, timeout (per call), chunk_size, max_in_flight, progress and PoolingParams
        fields (normalize=, dimensions=, output_dtype=, ...)."""
        check_keywords(kwargs, _BULK_KW, "encode_all")
        stubs = self._ready()
        return self._run(self._encode_all_plan(list(prompts), kwargs, "encode_all"), stubs, kwargs.get("timeout"))

    def embed(self, texts: Sequence[PromptLike], **kwargs: Any) -> np.ndarray:
        """Pooled outputs of `texts` stacked in input order, e.g. (N, 384); raises
        PoolstreamError (with the prompt's `index`) if any prompt fails. Keywords as for
        encode_all()."""
        check_keywords(kwargs, _BULK_KW, "embed")
        stubs = self._ready()
        return _stack(self._run(self._encode_all_plan(list(texts), kwargs, "embed"), stubs, kwargs.get("timeout")))

    def process(self, payload: payloads.PayloadLike, **kwargs: Any) -> ProcessResult:
        """Run the active plugin on one payload (dict: JSON, message: typed, bytes: raw with
        `media_type`). Keywords: params, request_id, priority, media_type, timeout."""
        check_keywords(kwargs, _PROCESS_KW, "process")
        stubs = self._ready()
        return self._run(self._process_plan(payload, kwargs, "process"), stubs, kwargs.get("timeout"))

    def process_stream(self, payload: payloads.PayloadLike, **kwargs: Any) -> Iterator[v1.ProcessStreamResponse]:
        """Run the plugin and stream its events (chunk or progress per `detail`), the last
        one being `result` (wrap it in ProcessResult to decode it)."""
        request = self._stream_request(payload, kwargs, "process_stream")
        return self._stream("ProcessStream", request, kwargs.get("timeout"))


class AsyncClient(_Core):
    """asyncio client over grpc.aio; the same methods as Client, as coroutines and async
    iterators, and the same behaviour (one implementation). Use `async with` or
    `await close()`."""

    def __init__(self, target: str, *, timeout: float | None = None,
                 metadata: Sequence[tuple[str, str]] | None = None, token: str | None = None,
                 credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = (),
                 channel: grpc.aio.Channel | None = None, retry: RetryPolicy | None = None):
        super().__init__(target, timeout, metadata, token, credentials, options, retry)
        self._own = channel is None
        self.channel = channel if channel is not None else self._open(self.options)
        self._stubs = _callables(self.channel)
        self._call_channel: grpc.aio.Channel | None = None if self._own else self.channel
        self._call_stubs: dict[str, Any] | None = None if self._own else self._stubs
        self._lock = asyncio.Lock()

    def _open(self, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        if self.credentials is not None:
            return grpc.aio.secure_channel(self.target, self.credentials, options=options)
        return grpc.aio.insecure_channel(self.target, options=options)

    async def _ready(self) -> dict[str, Any]:
        if self._call_stubs is None or self.limits is None:
            async with self._lock:
                if self.limits is None:
                    self._set_info(await self._run(
                        unary_plan("GetServerInfo", v1.GetServerInfoRequest(), self.retry), self._stubs, None))
                if self._call_stubs is None:
                    self._call_channel = self._open(self._call_options())
                    self._call_stubs = _callables(self._call_channel)
        assert self._call_stubs is not None
        return self._call_stubs

    async def _run(self, plan: Plan, stubs: dict[str, Any], timeout: float | None) -> Any:
        """Carry out a plan with grpc.aio calls (each starts when created)."""
        started: list[Any] = []
        kw = self._kw(timeout)
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    op = plan.throw(error) if error is not None else plan.send(value)
                except StopIteration as stop:
                    return stop.value
                value = error = None
                try:
                    if isinstance(op, Start):
                        value = stubs[op.method](op.request, **kw)
                        started.append(value)
                    elif isinstance(op, Wait):
                        value = await op.handle
                    elif isinstance(op, Sleep):
                        await asyncio.sleep(op.seconds)
                except grpc.RpcError as e:
                    error = PoolstreamError.from_rpc_error(e)
        finally:
            for call in started:
                call.cancel()
            plan.close()

    async def close(self) -> None:
        if self._call_channel is not None and self._call_channel is not self.channel:
            await self._call_channel.close()
        if self._own:
            await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self) -> None:
        await self.channel.channel_ready()

    async def server_info(self, *, timeout: float | None = None) -> v1.GetServerInfoResponse:
        info = await self._run(unary_plan("GetServerInfo", v1.GetServerInfoRequest(), NO_RETRY), self._stubs,
                               timeout)
        self._set_info(info)
        return info

    def encode(self, prompts: Iterable[PromptLike], **kwargs: Any) -> AsyncIterator[v1.EncodeResponse]:
        check_keywords(kwargs, _ENCODE_KW, "encode")  # now, not at the first iteration
        request = self._encode_request(prompts, kwargs)
        return self._stream("Encode", request, kwargs.get("timeout"))

    async def _stream(self, method: str, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        stub = (await self._ready())[method]
        try:
            async for r in stub(request, **self._kw(timeout)):
                yield r
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    async def encode_all(self, prompts: Sequence[PromptLike], **kwargs: Any) -> list[v1.EncodeResponse]:
        check_keywords(kwargs, _BULK_KW, "encode_all")
        stubs = await self._ready()
        return await self._run(self._encode_all_plan(list(prompts), kwargs, "encode_all"), stubs,
                               kwargs.get("timeout"))

    async def embed(self, texts: Sequence[PromptLike], **kwargs: Any) -> np.ndarray:
        check_keywords(kwargs, _BULK_KW, "embed")
        stubs = await self._ready()
        return _stack(await self._run(self._encode_all_plan(list(texts), kwargs, "embed"), stubs,
                                      kwargs.get("timeout")))

    async def process(self, payload: payloads.PayloadLike, **kwargs: Any) -> ProcessResult:
        check_keywords(kwargs, _PROCESS_KW, "process")
        stubs = await self._ready()
        return await self._run(self._process_plan(payload, kwargs, "process"), stubs, kwargs.get("timeout"))

    def process_stream(self, payload: payloads.PayloadLike, **kwargs: Any) -> AsyncIterator[v1.ProcessStreamResponse]:
        request = self._stream_request(payload, kwargs, "process_stream")
        return self._stream("ProcessStream", request, kwargs.get("timeout"))
