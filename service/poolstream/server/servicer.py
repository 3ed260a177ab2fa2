"""PoolingService handlers: thin adapters from protobuf to the pipeline and engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from poolstream import scoring
from poolstream.engine.errors import jittered_retry_delay
from poolstream.entrypoints.protocol import IOProcessorRequest
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors.pipeline import PipelineResult, PluginFailedError, monotonic_deadline
from poolstream.prompt_costs import check_proto_tensor_bytes, check_request_costs, proto_prompt_totals
from poolstream.server import convert
from poolstream.server.errors import (
    ServiceError,
    abort,
    invalid_argument,
    to_service_error,
    to_status_proto,
    with_field,
)
from poolstream.server.info import server_info
from poolstream.server.observability import choose_request_id, current_call
from poolstream.server.state import ServerState
from poolstream.server.watchdog import run_plugin_guarded
from poolstream.v1 import pooling_service_pb2 as pb
from poolstream.v1 import pooling_service_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

_NO_PLUGIN = (
    "No IOProcessor plugin is active, so Process and ProcessStream are unavailable. Start the "
    "server with --io-processor-plugin NAME, or set \"io_processor_plugin\" in the model's "
    "config.json; GetServerInfo lists the installed plugins. Encode works without a plugin."
)


class PoolingServicer(pb_grpc.PoolingServiceServicer):
    def __init__(self, state: ServerState, metrics=None):
        self.state = state
        self.metrics = metrics  # poolstream.server.metrics.ServerMetrics, or None

    # -- Process -----------------------------------------------------------
    async def Process(self, request: pb.ProcessRequest, context: grpc.aio.ServicerContext) -> pb.ProcessResponse:
        await self._admit_call(context)
        try:
            try:
                result = await self._run_plugin(request, context)
                # Encoding the response is part of the call: a plugin value that cannot
                # be encoded is the plugin's failure (INTERNAL with details), never UNKNOWN.
                return _process_response(result)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await abort(context, e)
        finally:
            self.state.active_calls -= 1

    # -- ProcessStream -----------------------------------------------------
    async def ProcessStream(
        self, request: pb.ProcessStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessStreamResponse]:
        await self._admit_call(context)
        try:
            events: asyncio.Queue[pb.ProcessStreamResponse | None] = asyncio.Queue()
            progress_only = request.detail == pb.STREAM_DETAIL_PROGRESS
            try:
                params = convert.params_from_proto(_params_or_none(request))
            except Exception as e:
                await abort(context, e)

            def on_prompt_count(total: int) -> None:
                events.put_nowait(pb.ProcessStreamResponse(progress=pb.ProcessProgress(completed=0, total=total)))

            def observer(index: int, out: PoolingRequestOutput, completed: int, total: int) -> None:
                if progress_only:
                    event = pb.ProcessStreamResponse(
                        progress=pb.ProcessProgress(completed=completed, total=total)
                    )
                else:
                    event = pb.ProcessStreamResponse(
                        chunk=pb.ProcessChunk(
                            index=index,
                            output=convert.output_to_proto(out, params),
                            completed=completed,
                            total=total,
                        )
                    )
                events.put_nowait(event)

            task = asyncio.create_task(self._run_plugin(request, context, observer, on_prompt_count))
            task.add_done_callback(lambda _: events.put_nowait(None))
            try:
                while (event := await events.get()) is not None:
                    yield event
                final = pb.ProcessStreamResponse(result=_process_response(task.result()))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await abort(context, e)
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            yield final
        finally:
            self.state.active_calls -= 1

    # -- Encode ------------------------------------------------------------
    async def Encode(
        self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EncodeResponse]:
        await self._admit_call(context)
        try:
            engine, params, request_id, deadline = await self._encode_setup(request, context)

            # One prompt (the common case) skips the merge machinery.
            if len(request.prompts) == 1:
                yield await self._encode_one(engine, request, 0, params, request_id, deadline)
                return

            responses = self._encode_many(engine, request, params, request_id, deadline)
            try:
                async for response in responses:
                    yield response
            finally:
                await responses.aclose()  # a call that ends early aborts its prompts now
        finally:
            self.state.active_calls -= 1

    # -- EncodeAll ---------------------------------------------------------
    async def EncodeAll(self, request: pb.EncodeAllRequest, context: grpc.aio.ServicerContext) -> pb.EncodeAllResponse:
        await self._admit_call(context)
        try:
            engine, params, request_id, deadline = await self._encode_setup(request, context)
            if len(request.prompts) == 1:
                results = [await self._encode_one(engine, request, 0, params, request_id, deadline)]
            else:
                # Cancelling the call ends _encode_many, which aborts every prompt in flight.
                results = [None] * len(request.prompts)
                async for response in self._encode_many(engine, request, params, request_id, deadline):
                    results[response.index] = response
            return pb.EncodeAllResponse(results=results)
        finally:
            self.state.active_calls -= 1

    async def _encode_setup(self, request, context):
        """Encode/EncodeAll admission: (engine, params, request id, deadline), or abort the call."""
        engine = self._engine()
        limits = self.state.config.limits
        try:
            if not request.prompts:
                raise invalid_argument("INVALID_PROMPT", "at least one prompt is required", "prompts")
            if len(request.prompts) > limits.max_prompts_per_request:
                raise invalid_argument(
                    "TOO_MANY_PROMPTS",
                    f"{len(request.prompts)} prompts; at most {limits.max_prompts_per_request} per request",
                    "prompts",
                )
            params = convert.params_from_proto(_params_or_none(request), task="encode")
            # Per-request cost caps, on the wire message's lengths: nothing decoded yet.
            check_request_costs(*proto_prompt_totals(request.prompts), limits)
        except Exception as e:
            await abort(context, e)
        request_id = _request_id(request.request_id, context)
        return engine, params, request_id, monotonic_deadline(context.time_remaining())

    async def _encode_many(self, engine, request, params, request_id, deadline) -> AsyncIterator[pb.EncodeResponse]:
        """Every prompt of a multi-prompt call, admitted in one pass; responses in completion
        order, a failure as that prompt's in-stream error.

        One pass rather than a task per prompt (``_encode_one``): the event loop spent ~15%
        less CPU per prompt on EncodeAll calls of 32 prompts (measured with a fast model,
        where the loop is the limit), and a burst of large calls delayed health checks on
        this port about half as much (docs/operations.md, "The health-only port"). Ending early
        (cancellation, a closed stream) aborts every prompt not yet done."""
        done: asyncio.Queue[asyncio.Future] = asyncio.Queue()
        live: dict[asyncio.Future, tuple[int, Any]] = {}
        failed: list[pb.EncodeResponse] = []
        try:
            for i, proto_prompt in enumerate(request.prompts):
                try:
                    check_proto_tensor_bytes(proto_prompt, self.state.config.limits)
                    prompt = convert.prompt_from_proto(proto_prompt, f"prompts[{i}]")
                    sub = engine.submit(prompt, params, f"{request_id}-{i}", request.priority, deadline)
                except Exception as e:
                    failed.append(_prompt_error(i, e))
                    continue
                live[sub.req.future] = (i, sub)
                sub.req.future.add_done_callback(done.put_nowait)
            for response in failed:
                yield response
            while live:
                fut = await done.get()
                entry = live.pop(fut, None)
                if entry is None:
                    continue
                i, sub = entry
                try:
                    out = engine.collect(sub)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    yield _prompt_error(i, e)
                    continue
                yield pb.EncodeResponse(index=i, output=convert.output_to_proto(out, params))
        finally:
            for _, sub in live.values():
                engine.drop(sub)

    async def _encode_one(self, engine, request, index, params, request_id, deadline) -> pb.EncodeResponse:
        """Encode prompt ``index``; any failure becomes an in-stream error for it alone."""
        try:
            check_proto_tensor_bytes(request.prompts[index], self.state.config.limits)
            prompt = convert.prompt_from_proto(request.prompts[index], f"prompts[{index}]")
            # One await rather than an async generator to drain (the server's engine is an
            # ObservedEngine around an AsyncEngine: encode_one, submit and collect exist).
            out = await engine.encode_one(prompt, params, f"{request_id}-{index}", request.priority, deadline)
            return pb.EncodeResponse(index=index, output=convert.output_to_proto(out, params))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return _prompt_error(index, e)

    # -- Rerank ------------------------------------------------------------
    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        """TEI-style rerank over the transport-neutral ``poolstream.scoring.rerank``."""
        await self._admit_call(context)
        try:
            try:
                engine = self._engine()
                limits = self.state.config.limits
                if not request.documents:
                    raise invalid_argument("INVALID_PROMPT", "at least one document is required", "documents")
                if len(request.documents) > limits.max_prompts_per_request:
                    raise invalid_argument(
                        "TOO_MANY_PROMPTS",
                        f"{len(request.documents)} documents; at most {limits.max_prompts_per_request} per request",
                        "documents")
                if request.HasField("top_n") and request.top_n < 1:
                    raise invalid_argument("INVALID_PARAMS", "top_n must be >= 1", "top_n")
                request_id = _request_id(request.request_id, context)
                result = await scoring.rerank(
                    engine, request.query, list(request.documents), request_id=request_id,
                    priority=request.priority, deadline=monotonic_deadline(context.time_remaining()),
                    raw_scores=request.raw_scores, return_text=request.return_text,
                    truncate=request.truncate if request.HasField("truncate") else None,
                    top_n=request.top_n if request.HasField("top_n") else None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await abort(context, e)
            return pb.RerankResponse(
                request_id=request_id,
                results=[pb.RerankResult(index=r.index, score=r.score, text=r.text, truncated=r.truncated)
                         for r in result.results],
                usage=pb.Usage(prompt_count=len(request.documents), prompt_tokens=result.prompt_tokens),
                method=result.method)
        finally:
            self.state.active_calls -= 1

    # -- GetServerInfo -----------------------------------------------------
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetServerInfoResponse:
        return server_info(self.state)

    # -- shared ------------------------------------------------------------
    async def _run_plugin(self, request, context, observer=None, on_prompt_count=None) -> PipelineResult:
        pipeline = self._pipeline()
        limits = self.state.config.limits
        if not request.HasField("data"):
            raise invalid_argument("INVALID_PAYLOAD", "the request has no data payload", "data")
        size = request.data.ByteSize()
        if size > limits.max_payload_bytes:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "PAYLOAD_TOO_LARGE",
                f"the payload has {size} bytes; at most {limits.max_payload_bytes} are accepted",
                [("data", "too large")],
            )
        io_request = IOProcessorRequest(
            data=convert.payload_from_proto(request.data, allow_non_finite=limits.allow_non_finite_inputs),
            model=self.state.config.model_config.name,
            priority=request.priority,
            params=convert.params_from_proto(_params_or_none(request), task="plugin"),
        )
        request_id = _request_id(request.request_id, context)
        deadline = monotonic_deadline(context.time_remaining())
        # --plugin-timeout: a hung plugin hook ends the call (server/watchdog.py).
        try:
            return await run_plugin_guarded(
                lambda obs, count: pipeline.run(
                    io_request, request_id=request_id, deadline=deadline, observer=obs, on_prompt_count=count
                ),
                observer,
                on_prompt_count,
                limits.plugin_timeout_s,
                self.metrics,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # payload errors name the payload (BadRequest)
            raise with_field(to_service_error(e), "data") from e

    def _engine(self):
        if self.state.draining:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "DRAINING", "the server is shutting down")
        if self.state.engine is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NOT_READY", "the model is still loading")
        return self.state.engine

    def _pipeline(self):
        self._engine()
        if self.state.pipeline is None:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "NO_PLUGIN", _NO_PLUGIN)
        return self.state.pipeline

    async def _admit_call(self, context: grpc.aio.ServicerContext) -> None:
        """Admission for every PoolingService call: readiness and the concurrent-call cap.

        On success the call counts in ``active_calls``; the handler's ``finally`` takes it
        out again (a plain try/finally: an async context manager costs two more coroutine
        steps per call, measurable on a ~10 ms request)."""
        state = self.state
        try:
            self._engine()
            if state.active_calls >= state.config.limits.max_concurrent_calls:
                raise ServiceError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "TOO_MANY_CALLS",
                    f"{state.active_calls} calls in flight; the limit is "
                    f"{state.config.limits.max_concurrent_calls} (--max-concurrent-calls)",
                    retry_after_s=jittered_retry_delay(
                        max(0.05, state.engine.estimate_wait_s()) if state.engine else 1.0),
                )
            # A deadline the queue already rules out is refused now, not after queueing.
            remaining = context.time_remaining()
            if remaining is not None:
                wait = state.engine.estimate_wait_s()
                if remaining <= 0 or wait > remaining:
                    raise ServiceError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "DEADLINE_TOO_SHORT",
                        f"the deadline leaves {max(remaining, 0) * 1000:.0f} ms but the engine queue "
                        f"needs about {wait * 1000:.0f} ms before this call could start; "
                        "retry with a longer deadline",
                        metadata={"estimated_wait_s": f"{wait:.3f}", "time_remaining_s": f"{remaining:.3f}"},
                    )
        except ServiceError as e:
            await abort(context, e)
        state.active_calls += 1


def _prompt_error(index: int, exc: BaseException) -> pb.EncodeResponse:
    """A prompt's failure as its in-stream error (the call goes on)."""
    return pb.EncodeResponse(index=index, error=to_status_proto(with_field(to_service_error(exc), f"prompts[{index}]")))


def _params_or_none(request):
    return request.params if request.HasField("params") else None


def _request_id(client_id: str, context: grpc.aio.ServicerContext) -> str:
    call = current_call()  # the interceptor already chose one (and logs carry it)
    if call is not None and call.request_id:
        return call.request_id
    return choose_request_id(client_id, context.invocation_metadata())


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
