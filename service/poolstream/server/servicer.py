"""PoolingService handlers: protobuf to and from the serving core (``poolstream.serving``).

Admission, request ids, the Encode fan-out, the plugin run and its watchdog live in the
core; a handler decodes the request, calls the core, and encodes its events and errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from poolstream import scoring
from poolstream.plugins.io_processors.pipeline import PipelineResult, PluginFailedError, monotonic_deadline
from poolstream.prompt_costs import check_proto_tensor_bytes, check_request_costs, proto_prompt_totals
from poolstream.server import convert
from poolstream.server.errors import abort, invalid_argument, to_status_proto
from poolstream.server.info import server_info
from poolstream.server.observability import choose_request_id, current_call
from poolstream.serving import CallContext, CallResult, PromptResult, PromptsReady, ServingCore
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc


class PoolingServicer(pb_grpc.PoolingServiceServicer):
    def __init__(self, core: ServingCore, metrics: Any = None):
        self.core = core
        self.metrics = metrics  # kept for callers that pass it; the core holds the metrics

    # -- Process -----------------------------------------------------------
    async def Process(self, request: pb.ProcessRequest, context: grpc.aio.ServicerContext) -> pb.ProcessResponse:
        core = self.core
        ctx = _call_context(request, context)
        try:
            core.begin(ctx)
        except Exception as e:
            await abort(context, e)
        try:
            try:
                data, params = self._plugin_input(request)
                result = await core.run_process(data, params, ctx)
                # Encoding the response is part of the call: a plugin value that cannot
                # be encoded is the plugin's failure (INTERNAL with details), never UNKNOWN.
                return _process_response(result)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await abort(context, e)
                raise  # abort() never returns
        finally:
            core.end()

    # -- ProcessStream -----------------------------------------------------
    async def ProcessStream(
        self, request: pb.ProcessStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        core = self.core
        ctx = _call_context(request, context)
        try:
            core.begin(ctx)
        except Exception as e:
            await abort(context, e)
        try:
            progress_only = request.detail == pb.STREAM_DETAIL_PROGRESS
            try:
                out_params = convert.params_from_proto(_params_or_none(request))
                data, params = self._plugin_input(request)
            except Exception as e:
                await abort(context, e)
            events = core.run_process_stream(data, params, ctx)
            try:
                async for event in events:
                    if isinstance(event, PromptResult):
                        if progress_only or event.output is None:
                            yield pb.ProcessStreamResponse(
                                progress=pb.ProcessProgress(completed=event.completed, total=event.total))
                        else:
                            yield pb.ProcessStreamResponse(chunk=pb.ProcessChunk(
                                index=event.index, output=convert.output_to_proto(event.output, out_params),
                                completed=event.completed, total=event.total))
                    elif isinstance(event, PromptsReady):
                        yield pb.ProcessStreamResponse(progress=pb.ProcessProgress(completed=0, total=event.total))
                    elif isinstance(event, CallResult):
                        # Encoded inside the try: a value that cannot be encoded is the plugin's failure.
                        yield pb.ProcessStreamResponse(result=_process_response(event.result))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await abort(context, e)
            finally:
                await events.aclose()
        finally:
            core.end()

    def _plugin_input(self, request: Any) -> tuple[Any, Any]:
        """The decoded payload and params of a Process/ProcessStream request (or raise)."""
        core = self.core
        core.ready_pipeline()
        if not request.HasField("data"):
            raise invalid_argument("INVALID_PAYLOAD", "the request has no data payload", "data")
        core.check_payload_size(request.data.ByteSize())
        return (convert.payload_from_proto(request.data, allow_non_finite=core.config.limits.allow_non_finite_inputs),
                convert.params_from_proto(_params_or_none(request), task="plugin"))

    # -- Encode ------------------------------------------------------------
    async def Encode(
        self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EncodeResponse]:
        core = self.core
        ctx = _call_context(request, context)
        try:
            core.begin(ctx)
        except Exception as e:
            await abort(context, e)
        try:
            params, prompts = await self._encode_input(request, context)
            results = core.run_encode(prompts, params, ctx)
            try:
                async for result in results:
                    yield _encode_response(result, params)
            finally:
                await results.aclose()  # a call that ends early aborts its prompts now
        finally:
            core.end()

    # -- EncodeAll ---------------------------------------------------------
    async def EncodeAll(self, request: pb.EncodeAllRequest, context: grpc.aio.ServicerContext) -> pb.EncodeAllResponse:
        core = self.core
        ctx = _call_context(request, context)
        try:
            core.begin(ctx)
        except Exception as e:
            await abort(context, e)
        try:
            params, prompts = await self._encode_input(request, context)
            responses: list[Any] = [None] * len(prompts)
            # Cancelling the call ends the iterator, which aborts every prompt in flight.
            async for result in core.run_encode(prompts, params, ctx):
                responses[result.index] = _encode_response(result, params)
            return pb.EncodeAllResponse(results=responses)
        finally:
            core.end()

    async def _encode_input(self, request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, list[Any]]:
        """(params, prompts) of an Encode/EncodeAll request, or abort the call. A prompt
        that does not decode stays in the list as its error (reported for that prompt)."""
        try:
            self.core.check_prompt_count(len(request.prompts))
            params = convert.params_from_proto(_params_or_none(request), task="encode")
            # Per-request cost caps, on the wire message's lengths: nothing decoded yet.
            check_request_costs(*proto_prompt_totals(request.prompts), self.core.config.limits)
        except Exception as e:
            await abort(context, e)
        prompts: list[Any] = []
        for i, proto_prompt in enumerate(request.prompts):
            try:
                check_proto_tensor_bytes(proto_prompt, self.core.config.limits)
                prompts.append(convert.prompt_from_proto(proto_prompt, f"prompts[{i}]"))
            except Exception as e:
                prompts.append(e)
        return params, prompts

    # -- Rerank ------------------------------------------------------------
    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        """TEI-style rerank over the transport-neutral ``poolstream.scoring.rerank``."""
        core = self.core
        ctx = _call_context(request, context)
        try:
            core.begin(ctx)
        except Exception as e:
            await abort(context, e)
        try:
            try:
                limits = core.config.limits
                if not request.documents:
                    raise invalid_argument("INVALID_PROMPT", "at least one document is required", "documents")
                if len(request.documents) > limits.max_prompts_per_request:
                    raise invalid_argument(
                        "TOO_MANY_PROMPTS",
                        f"{len(request.documents)} documents; at most {limits.max_prompts_per_request} per request",
                        "documents")
                if request.HasField("top_n") and request.top_n < 1:
                    raise invalid_argument("INVALID_PARAMS", "top_n must be >= 1", "top_n")
                result = await scoring.rerank(
                    core.prompt_encoder(ctx), request.query, list(request.documents), request_id=ctx.request_id,
                    priority=request.priority, deadline=ctx.deadline,
                    raw_scores=request.raw_scores, return_text=request.return_text,
                    truncate=request.truncate if request.HasField("truncate") else None,
                    top_n=request.top_n if request.HasField("top_n") else None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await abort(context, e)
            return pb.RerankResponse(
                request_id=ctx.request_id,
                results=[pb.RerankResult(index=r.index, score=r.score, text=r.text, truncated=r.truncated)
                         for r in result.results],
                usage=pb.Usage(prompt_count=len(request.documents), prompt_tokens=result.prompt_tokens),
                method=result.method)
        finally:
            core.end()

    # -- GetServerInfo -----------------------------------------------------
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        return server_info(self.core)


def _call_context(request: Any, context: grpc.aio.ServicerContext) -> CallContext:
    """The serving core's context for a gRPC call: request id, deadline, priority; the
    interceptor's call (logs, trailers) shares its record."""
    call = current_call()  # the interceptor already chose an id (and logs carry it)
    if call is not None and call.request_id:
        request_id = call.request_id
    else:
        request_id = choose_request_id(request.request_id, context.invocation_metadata())
    ctx = CallContext(request_id=request_id, deadline=monotonic_deadline(context.time_remaining()),
                      priority=request.priority)
    if call is not None:
        call.record = ctx.record
    return ctx


def _encode_response(result: PromptResult, params: Any) -> pb.EncodeResponse:
    if result.error is not None or result.output is None:
        assert result.error is not None
        return pb.EncodeResponse(index=result.index, error=to_status_proto(result.error))
    return pb.EncodeResponse(index=result.index, output=convert.output_to_proto(result.output, params))


def _params_or_none(request: Any) -> Any:
    return request.params if request.HasField("params") else None


def _process_response(result: PipelineResult) -> pb.ProcessResponse:
    created = timestamp_pb2.Timestamp()
    created.FromSeconds(int(result.response.created_at or time.time()))
    try:
        data = convert.payload_to_proto(result.response.data)
    except Exception as e:  # the pipeline made it JSON-able; what still fails is the plugin's value
        raise PluginFailedError("output_to_response", e) from e
    return pb.ProcessResponse(
        request_id=result.response.request_id or "",
        created_at=created,
        data=data,
        usage=pb.Usage(prompt_count=result.prompt_count, prompt_tokens=result.prompt_tokens),
    )
