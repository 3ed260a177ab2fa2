"""Synchronous and asyncio clients for poolstream.v1.PoolingService.

Both speak grpcio (`grpc` / `grpc.aio` channels) and use the betterproto2
dataclasses generated from protos/ as request and response types.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Self

import betterproto2
import grpc
import grpc.aio
import numpy as np

from . import payloads, tensors
from ._messages import rpc, v1

__all__ = ["AsyncClient", "Client", "PoolstreamError", "ProcessResult", "PromptLike"]

SERVICE = "/poolstream.v1.PoolingService/"

#: A prompt: text, token ids, named tensors (multi-modal), or a Prompt.
PromptLike = str | Sequence[int] | v1.Prompt | v1.TokenIds | v1.MultiModalPrompt


@dataclasses.dataclass(eq=False, repr=False)
class _ErrorInfo(betterproto2.Message):
    """google.rpc.ErrorInfo (reason and domain; metadata is skipped)."""

    reason: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    domain: str = betterproto2.field(2, betterproto2.TYPE_STRING)


class PoolstreamError(Exception):
    """A failed call (or a failed prompt of an Encode stream).

    `code` is the grpc.StatusCode; `reason`/`domain` come from the status's
    google.rpc.ErrorInfo detail when the server sent one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        reason: str = "",
        domain: str = "",
        index: int | None = None,
    ):
        where = f"prompt {index}: " if index is not None else ""
        super().__init__(f"{where}{code.name}{f' ({reason})' if reason else ''}: {details}")
        self.code = code
        self.details = details
        self.reason = reason
        self.domain = domain
        self.index = index

    @staticmethod
    def _reason(status: rpc.Status) -> tuple[str, str]:
        for detail in status.details:
            if detail.type_url.endswith("/google.rpc.ErrorInfo"):
                info = _ErrorInfo.parse(detail.value)
                return info.reason, info.domain
        return "", ""

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> PoolstreamError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = (error.details() if hasattr(error, "details") else "") or ""
        reason = domain = ""
        metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, val in metadata or ():
            if key == "grpc-status-details-bin":
                with contextlib.suppress(Exception):  # details are best effort
                    reason, domain = cls._reason(rpc.Status.parse(val))
        return cls(code, details, reason, domain)

    @classmethod
    def from_status(cls, status: rpc.Status, index: int | None = None) -> PoolstreamError:
        codes = {c.value[0]: c for c in grpc.StatusCode}
        reason, domain = cls._reason(status)
        return cls(codes.get(status.code, grpc.StatusCode.UNKNOWN), status.message, reason, domain, index)


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


def pooling_params(params: v1.PoolingParams | None = None, **kwargs: Any) -> v1.PoolingParams | None:
    """PoolingParams from a message and/or keyword fields (normalize=,
    dimensions=, truncate=, truncate_prompt_tokens=, output_dtype=,
    include_float_values=); None when neither is given."""
    if not kwargs:
        return params
    base = params.to_dict(casing=betterproto2.Casing.SNAKE) if params else {}
    p = v1.PoolingParams.from_dict(base)
    for key, val in kwargs.items():
        if val is None:
            continue
        if key == "output_dtype" and isinstance(val, str):
            val = v1.DType[val.upper().removeprefix("DTYPE_")]
        setattr(p, key, val)
    return p


def _encode_request(
    prompts: Iterable[PromptLike], params, request_id: str, priority: int, kw, message=v1.EncodeRequest
) -> Any:
    """An EncodeRequest, or (``message=v1.EncodeAllRequest``) the same fields for EncodeAll."""
    return message(
        request_id=request_id,
        prompts=[as_prompt(p) for p in prompts],
        params=pooling_params(params, **kw),
        priority=priority,
    )


def _stack(responses: Iterable[v1.EncodeResponse], n: int) -> np.ndarray:
    rows: list[np.ndarray | None] = [None] * n
    for r in responses:
        if r.error is not None:
            raise PoolstreamError.from_status(r.error, r.index)
        rows[r.index] = tensors.to_numpy(r.output.outputs.data)
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:
        raise PoolstreamError(grpc.StatusCode.INTERNAL, f"no result for prompts {missing}")
    return np.stack(rows)


class _Base:
    def __init__(self, timeout: float | None, metadata: Sequence[tuple[str, str]] | None, token: str | None):
        self.timeout = timeout
        self.metadata = list(metadata or [])
        if token:
            self.metadata.append(("authorization", f"Bearer {token}"))

    def _kw(self, timeout: float | None) -> dict[str, Any]:
        return {"timeout": self.timeout if timeout is None else timeout, "metadata": self.metadata or None}


class Client(_Base):
    """Blocking client. `target` is "host:port"; use as a context manager or
    call close(). Errors are raised as PoolstreamError."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.Channel | None = None,
    ):
        super().__init__(timeout, metadata, token)
        if channel is None:
            channel = (
                grpc.secure_channel(target, credentials, options=options)
                if credentials
                else grpc.insecure_channel(target, options=options)
            )
        self.channel = channel
        self._info = channel.unary_unary(
            SERVICE + "GetServerInfo",
            v1.GetServerInfoRequest.SerializeToString,
            v1.GetServerInfoResponse.FromString,
        )
        self._process = channel.unary_unary(
            SERVICE + "Process", v1.ProcessRequest.SerializeToString, v1.ProcessResponse.FromString
        )
        self._process_stream = channel.unary_stream(
            SERVICE + "ProcessStream",
            v1.ProcessStreamRequest.SerializeToString,
            v1.ProcessStreamResponse.FromString,
        )
        self._encode = channel.unary_stream(
            SERVICE + "Encode", v1.EncodeRequest.SerializeToString, v1.EncodeResponse.FromString
        )
        self._encode_all = channel.unary_unary(
            SERVICE + "EncodeAll", v1.EncodeAllRequest.SerializeToString, v1.EncodeAllResponse.FromString
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (grpc.FutureTimeoutError otherwise)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def server_info(self, *, timeout: float | None = None) -> v1.GetServerInfoResponse:
        try:
            return self._info(v1.GetServerInfoRequest(), **self._kw(timeout))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    def encode(
        self,
        prompts: Iterable[PromptLike],
        *,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        timeout: float | None = None,
        **param_fields: Any,
    ) -> Iterator[v1.EncodeResponse]:
        """Stream one EncodeResponse per prompt, in completion order (each
        carries its `index`; a failed prompt has `error` set)."""
        request = _encode_request(prompts, params, request_id, priority, param_fields)
        try:
            yield from self._encode(request, **self._kw(timeout))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    def encode_all(
        self,
        prompts: Iterable[PromptLike],
        *,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        timeout: float | None = None,
        **param_fields: Any,
    ) -> list[v1.EncodeResponse]:
        """EncodeAll: every prompt's EncodeResponse in prompt order, in one answer."""
        request = _encode_request(prompts, params, request_id, priority, param_fields, v1.EncodeAllRequest)
        try:
            return list(self._encode_all(request, **self._kw(timeout)).results)
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    def embed(self, texts: Sequence[PromptLike], **kwargs: Any) -> np.ndarray:
        """Pooled outputs of `texts` stacked in input order, e.g. (N, 384), from one
        EncodeAll call; raises PoolstreamError if any prompt fails. Keywords as for encode()."""
        texts = list(texts)
        return _stack(self.encode_all(texts, **kwargs), len(texts))

    def process(
        self,
        payload: payloads.PayloadLike,
        *,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        media_type: str | None = None,
        timeout: float | None = None,
    ) -> ProcessResult:
        """Run the active plugin on one payload (dict: JSON, message: typed,
        bytes: raw with `media_type`)."""
        request = v1.ProcessRequest(
            request_id=request_id,
            data=payloads.as_payload(payload, media_type),
            priority=priority,
            params=params,
        )
        try:
            return ProcessResult(self._process(request, **self._kw(timeout)))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    def process_stream(
        self,
        payload: payloads.PayloadLike,
        *,
        detail: v1.StreamDetail = v1.StreamDetail.UNSPECIFIED,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        media_type: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[v1.ProcessStreamResponse]:
        """Run the plugin and stream its events (chunk or progress), the last
        one being `result` (wrap it in ProcessResult to decode it)."""
        request = v1.ProcessStreamRequest(
            request_id=request_id,
            data=payloads.as_payload(payload, media_type),
            priority=priority,
            params=params,
            detail=detail,
        )
        try:
            yield from self._process_stream(request, **self._kw(timeout))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None


class AsyncClient(_Base):
    """asyncio client over a grpc.aio channel; same methods as Client, as
    coroutines and async iterators. Use `async with` or `await close()`."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.aio.Channel | None = None,
    ):
        super().__init__(timeout, metadata, token)
        if channel is None:
            channel = (
                grpc.aio.secure_channel(target, credentials, options=options)
                if credentials
                else grpc.aio.insecure_channel(target, options=options)
            )
        self.channel = channel
        self._info = channel.unary_unary(
            SERVICE + "GetServerInfo",
            v1.GetServerInfoRequest.SerializeToString,
            v1.GetServerInfoResponse.FromString,
        )
        self._process = channel.unary_unary(
            SERVICE + "Process", v1.ProcessRequest.SerializeToString, v1.ProcessResponse.FromString
        )
        self._process_stream = channel.unary_stream(
            SERVICE + "ProcessStream",
            v1.ProcessStreamRequest.SerializeToString,
            v1.ProcessStreamResponse.FromString,
        )
        self._encode = channel.unary_stream(
            SERVICE + "Encode", v1.EncodeRequest.SerializeToString, v1.EncodeResponse.FromString
        )
        self._encode_all = channel.unary_unary(
            SERVICE + "EncodeAll", v1.EncodeAllRequest.SerializeToString, v1.EncodeAllResponse.FromString
        )

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self) -> None:
        await self.channel.channel_ready()

    async def server_info(self, *, timeout: float | None = None) -> v1.GetServerInfoResponse:
        try:
            return await self._info(v1.GetServerInfoRequest(), **self._kw(timeout))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    async def encode(
        self,
        prompts: Iterable[PromptLike],
        *,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        timeout: float | None = None,
        **param_fields: Any,
    ) -> AsyncIterator[v1.EncodeResponse]:
        request = _encode_request(prompts, params, request_id, priority, param_fields)
        try:
            async for r in self._encode(request, **self._kw(timeout)):
                yield r
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    async def encode_all(
        self,
        prompts: Iterable[PromptLike],
        *,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        timeout: float | None = None,
        **param_fields: Any,
    ) -> list[v1.EncodeResponse]:
        request = _encode_request(prompts, params, request_id, priority, param_fields, v1.EncodeAllRequest)
        try:
            return list((await self._encode_all(request, **self._kw(timeout))).results)
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    async def embed(self, texts: Sequence[PromptLike], **kwargs: Any) -> np.ndarray:
        texts = list(texts)
        return _stack(await self.encode_all(texts, **kwargs), len(texts))

    async def process(
        self,
        payload: payloads.PayloadLike,
        *,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        media_type: str | None = None,
        timeout: float | None = None,
    ) -> ProcessResult:
        request = v1.ProcessRequest(
            request_id=request_id,
            data=payloads.as_payload(payload, media_type),
            priority=priority,
            params=params,
        )
        try:
            return ProcessResult(await self._process(request, **self._kw(timeout)))
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None

    async def process_stream(
        self,
        payload: payloads.PayloadLike,
        *,
        detail: v1.StreamDetail = v1.StreamDetail.UNSPECIFIED,
        params: v1.PoolingParams | None = None,
        request_id: str = "",
        priority: int = 0,
        media_type: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[v1.ProcessStreamResponse]:
        request = v1.ProcessStreamRequest(
            request_id=request_id,
            data=payloads.as_payload(payload, media_type),
            priority=priority,
            params=params,
            detail=detail,
        )
        try:
            async for event in self._process_stream(request, **self._kw(timeout)):
                yield event
        except grpc.RpcError as e:
            raise PoolstreamError.from_rpc_error(e) from None
