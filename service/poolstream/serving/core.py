"""``ServingCore``: admission, request ids, the Encode fan-out and the plugin run.

See the package docstring (``poolstream.serving``) for the API doors use.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from poolstream.config import PoolstreamConfig
from poolstream.engine.errors import jittered_retry_delay
from poolstream.entrypoints.protocol import IOProcessorRequest
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors import IOProcessorSelection
from poolstream.plugins.io_processors.pipeline import PipelineResult, PluginPipeline
from poolstream.pooling_params import PoolingParams
from poolstream.serving.context import (
    CallContext,
    CallRecord,
    CallResult,
    ProcessEvent,
    PromptResult,
    PromptsReady,
    new_request_id,
)
from poolstream.serving.errors import Code, ServingError, invalid_argument, to_serving_error, with_field
from poolstream.serving.watchdog import run_plugin_guarded

NO_PLUGIN = (
    "No IOProcessor plugin is active, so Process and ProcessStream are unavailable. Start the "
    "server with --io-processor-plugin NAME, or set \"io_processor_plugin\" in the model's "
    "config.json; GetServerInfo lists the installed plugins. Encode works without a plugin."
)


class ServingCore:
    """The transport-neutral server: one per process, shared by every door.

    Holds the config, the plugin selection, the engine (None while it loads) and the
    plugin pipeline; ``metrics`` (``server.metrics.ServerMetrics`` or None) is fed from
    the calls' records.
    """

    def __init__(self, config: PoolstreamConfig, selection: IOProcessorSelection, metrics: Any = None):
        self.config = config
        self.selection = selection
        self.metrics = metrics
        self.engine: Any = None  # an engine.group.EngineClient once loaded
        self.pipeline: PluginPipeline | None = None
        self.draining = False
        self.active_calls = 0
        # Filled by whoever starts the process layout (GetServerInfo: server/info.py).
        self.layout: dict[str, Any] = {}

    def attach_engine(self, engine: Any) -> None:
        self.engine = engine
        if self.selection.processor is not None:
            self.pipeline = PluginPipeline(
                self.selection.processor, engine, self.config.limits.max_prompts_per_request, self.config.limits)

    # -- admission ---------------------------------------------------------------
    def ready_engine(self) -> Any:
        """The engine, or UNAVAILABLE while loading or draining."""
        if self.draining:
            raise ServingError(Code.UNAVAILABLE, "DRAINING", "the server is shutting down")
        engine = self.engine
        if engine is None:
            raise ServingError(Code.UNAVAILABLE, "NOT_READY", "the model is still loading")
        if not engine.is_running:
            raise ServingError(Code.UNAVAILABLE, "ENGINE_DEAD", str(engine.dead_error or "the engine stopped"))
        return engine

    def begin(self, ctx: CallContext) -> None:
        """Admit a call: readiness, the concurrent-call cap, a deadline the queue rules out.

        On success the call counts in ``active_calls`` until :meth:`end` (doors call it in a
        ``finally``); raises :class:`ServingError` otherwise."""
        engine = self.ready_engine()
        limits = self.config.limits
        if self.active_calls >= limits.max_concurrent_calls:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                "TOO_MANY_CALLS",
                f"{self.active_calls} calls in flight; the limit is "
                f"{limits.max_concurrent_calls} (--max-concurrent-calls)",
                retry_after_s=jittered_retry_delay(max(0.05, engine.estimate_wait_s())),
            )
        if ctx.deadline is not None:
            # A deadline the queue already rules out is refused now, not after queueing.
            remaining = ctx.deadline - time.monotonic()
            wait = engine.estimate_wait_s()
            if remaining <= 0 or wait > remaining:
                raise ServingError(
                    Code.DEADLINE_EXCEEDED,
                    "DEADLINE_TOO_SHORT",
                    f"the deadline leaves {max(remaining, 0) * 1000:.0f} ms but the engine queue "
                    f"needs about {wait * 1000:.0f} ms before this call could start; "
                    "retry with a longer deadline",
                    metadata={"estimated_wait_s": f"{wait:.3f}", "time_remaining_s": f"{remaining:.3f}"},
                )
        if not ctx.request_id:
            ctx.request_id = new_request_id()
        ctx.task = asyncio.current_task()
        self.active_calls += 1

    def end(self) -> None:
        """The call admitted by :meth:`begin` is over."""
        self.active_calls -= 1

    # -- Encode --------------------------------------------------------------------
    def check_prompt_count(self, count: int) -> None:
        limits = self.config.limits
        if count == 0:
            raise invalid_argument("INVALID_PROMPT", "at least one prompt is required", "prompts")
        if count > limits.max_prompts_per_request:
            raise invalid_argument(
                "TOO_MANY_PROMPTS",
                f"{count} prompts; at most {limits.max_prompts_per_request} per request",
                "prompts",
            )

    async def encode(
        self, prompts: Sequence[Any], params: PoolingParams | None, ctx: CallContext
    ) -> AsyncGenerator[PromptResult, None]:
        """Admit, then :meth:`run_encode`; the call ends with the iterator."""
        self.begin(ctx)
        try:
            self.check_prompt_count(len(prompts))
            results = self.run_encode(prompts, params, ctx)
            try:
                async for result in results:
                    yield result
            finally:
                await results.aclose()
        finally:
            self.end()

    async def run_encode(
        self, prompts: Sequence[Any], params: PoolingParams | None, ctx: CallContext
    ) -> AsyncGenerator[PromptResult, None]:
        """Every prompt of an admitted call, results in completion order.

        A prompt that fails yields its :class:`PromptResult` with ``error`` (field
        ``prompts[i]``) and the call goes on; an entry of ``prompts`` that is an exception
        (a prompt the door could not decode) is reported the same way. Closing the iterator
        or cancelling the caller aborts every prompt not yet done."""
        engine = self.ready_engine()
        total = len(prompts)
        group = engine.submit_group(prompts, params, ctx.request_id, ctx.priority, ctx.deadline)
        tracked = TrackedGroup(group, ctx.record, self.metrics)
        completed = 0
        try:
            async for index, result in tracked:
                completed += 1
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    error = with_field(to_serving_error(result), f"prompts[{index}]")
                    if error is not result:
                        error.__cause__ = result
                    yield PromptResult(index, None, error, completed, total)
                else:
                    yield PromptResult(index, result, None, completed, total)
        finally:
            tracked.close()

    def prompt_encoder(self, ctx: CallContext) -> "PromptEncoder":
        """For code written against one prompt at a time (``poolstream.scoring``): an object
        with ``model_info`` and ``await encode_one(prompt, params, request_id, priority,
        deadline)``, each prompt a group of one, tracked in the call's record and metrics."""
        return PromptEncoder(self, ctx)

    # -- Process / ProcessStream -----------------------------------------------------
    def ready_pipeline(self) -> PluginPipeline:
        self.ready_engine()
        if self.pipeline is None:
            raise ServingError(Code.FAILED_PRECONDITION, "NO_PLUGIN", NO_PLUGIN)
        return self.pipeline

    def check_payload_size(self, size: int) -> None:
        limit = self.config.limits.max_payload_bytes
        if size > limit:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                "PAYLOAD_TOO_LARGE",
                f"the payload has {size} bytes; at most {limit} are accepted",
                [("data", "too large")],
            )

    async def process(self, data: Any, params: PoolingParams | None, ctx: CallContext) -> PipelineResult:
        """Admit, then run the plugin on ``data`` (the decoded payload)."""
        self.begin(ctx)
        try:
            return await self.run_process(data, params, ctx)
        finally:
            self.end()

    async def run_process(
        self,
        data: Any,
        params: PoolingParams | None,
        ctx: CallContext,
        observer: Any = None,
        on_prompt_count: Any = None,
        whole_request: Any = None,
    ) -> PipelineResult:
        """The plugin pipeline for an admitted call, under the plugin watchdog.

        ``observer(index, output, completed, total)`` sees each output as the plugin takes
        it, ``on_prompt_count(n)`` the prompt count once pre-processing ends; ``whole_request``
        is what an E1 plugin's ``parse_request`` gets instead of the request (vLLM's offline
        ``LLM.encode`` passes the whole prompt dict)."""
        pipeline = self.ready_pipeline()
        request = IOProcessorRequest(
            data=data, model=self.config.model_config.name, priority=ctx.priority, params=params)
        record, metrics = ctx.record, self.metrics

        def submit(prompts: Sequence[Any], p: Any, rid: str, priority: int, deadline: float | None) -> Any:
            group = self.ready_engine().submit_group(prompts, p, rid, priority, deadline)
            group.track_arrivals()
            tracked = TrackedGroup(group, record, metrics)
            record.groups.append(tracked)
            return tracked

        try:
            # --plugin-timeout: a hung plugin hook ends the call (serving/watchdog.py).
            return await run_plugin_guarded(
                lambda obs, count: pipeline.run(
                    request, request_id=ctx.request_id, deadline=ctx.deadline, observer=obs,
                    on_prompt_count=count, submit=submit, whole_request=whole_request),
                record,
                observer,
                on_prompt_count,
                self.config.limits.plugin_timeout_s,
                metrics,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # payload errors name the payload (BadRequest)
            raise with_field(to_serving_error(e), "data") from e

    async def process_stream(
        self, data: Any, params: PoolingParams | None, ctx: CallContext
    ) -> AsyncGenerator[ProcessEvent, None]:
        """Admit, then :meth:`run_process_stream`."""
        self.begin(ctx)
        try:
            events = self.run_process_stream(data, params, ctx)
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()
        finally:
            self.end()

    async def run_process_stream(
        self, data: Any, params: PoolingParams | None, ctx: CallContext
    ) -> AsyncGenerator[ProcessEvent, None]:
        """The plugin run as events: :class:`PromptsReady`, a :class:`PromptResult` per output
        as the plugin takes it, then :class:`CallResult` (errors raise ServingError)."""
        events: asyncio.Queue[ProcessEvent | None] = asyncio.Queue()

        def on_prompt_count(total: int) -> None:
            events.put_nowait(PromptsReady(total))

        def observer(index: int, out: PoolingRequestOutput, completed: int, total: int) -> None:
            events.put_nowait(PromptResult(index, out, None, completed, total))

        task = asyncio.create_task(self.run_process(data, params, ctx, observer, on_prompt_count))
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            result = task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        yield CallResult(result)

    # -- info ------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the server runs, transport-neutral (GetServerInfo maps the same facts)."""
        mcfg, ecfg, limits = self.config.model_config, self.config.engine_config, self.config.limits
        sel = self.selection
        model: dict[str, Any] = {"name": mcfg.name, "path": mcfg.model, "architecture": mcfg.architecture}
        if self.engine is not None:
            mi = self.engine.model_info
            model.update(output_shape=list(mi.output_shape), max_model_len=mi.max_model_len,
                         pooling=mi.pooling, normalize=mi.normalize, device=str(mi.device))
        return {
            "model": model,
            "plugin": {"name": sel.name or "", "source": sel.source.value, "available": list(sel.available)},
            "limits": {
                "max_prompts_per_request": limits.max_prompts_per_request,
                "max_concurrent_calls": limits.max_concurrent_calls,
                "max_payload_bytes": limits.max_payload_bytes,
                "max_queued_prompts": ecfg.max_queued_prompts,
                "plugin_timeout_s": limits.plugin_timeout_s,
            },
            "ready": self.engine is not None and not self.draining,
            "layout": dict(self.layout),
        }


class TrackedGroup:
    """A prompt group whose progress feeds the call's record and the metrics.

    While a prompt is queued or running the call counts it in ``record.waiting`` (the
    watchdog never blames the plugin for engine time); each finished prompt adds its
    arrival and engine timing to the record and its outcome, latency and tokens to the
    metrics; ``close()`` counts the prompts it aborts as cancelled."""

    __slots__ = ("_group", "_record", "_metrics", "_submitted", "_left", "size")

    def __init__(self, group: Any, record: CallRecord, metrics: Any):
        self._group = group
        self._record = record
        self._metrics = metrics
        self.size = group.size
        self._left = group.size
        record.waiting += group.size
        record.activity = self._submitted = time.monotonic()

    def __aiter__(self) -> "TrackedGroup":
        return self

    async def __anext__(self) -> tuple[int, Any]:
        index, result = await self._group.__anext__()
        record, metrics = self._record, self._metrics
        self._left -= 1
        record.waiting -= 1
        record.activity = now = time.monotonic()
        if isinstance(result, BaseException):
            if metrics is not None:
                metrics.prompts_of("cancelled" if isinstance(result, asyncio.CancelledError) else "error").inc()
            return index, result
        record.note_output(result, now)
        if metrics is not None:
            metrics.prompts_of("ok").inc()
            metrics.prompt_latency.observe(now - self._submitted)
            metrics.observe_timing(result.timing)
            ids = result.prompt_token_ids
            metrics.tokens.inc(len(ids) if ids else 1)
        return index, result

    def pending_since(self) -> float | None:
        return self._group.pending_since()

    def outstanding(self) -> int:
        return self._group.outstanding()

    def close(self) -> None:
        if self in self._record.groups:
            self._record.groups.remove(self)
        left = self._left
        if left:
            self._left = 0
            self._record.waiting -= left
            self._record.activity = time.monotonic()
            if self._metrics is not None:
                self._metrics.prompts_of("cancelled").inc(left)
        self._group.close()


class PromptEncoder:
    """``ServingCore.prompt_encoder``: one prompt at a time, through the core."""

    __slots__ = ("_core", "_ctx")

    def __init__(self, core: ServingCore, ctx: CallContext):
        self._core = core
        self._ctx = ctx

    @property
    def model_info(self) -> Any:
        return self._core.ready_engine().model_info

    async def encode_one(self, prompt: Any, params: PoolingParams | None, request_id: str, priority: int = 0,
                         deadline: float | None = None) -> PoolingRequestOutput:
        """The prompt's output (named ``request_id``), or its engine error raised."""
        engine = self._core.ready_engine()
        group = TrackedGroup(engine.submit_group([prompt], params, request_id, priority, deadline),
                             self._ctx.record, self._core.metrics)
        try:
            async for _index, result in group:
                if isinstance(result, BaseException):
                    raise result
                result.request_id = request_id
                return result
        finally:
            group.close()
        raise RuntimeError("the engine returned no result")  # pragma: no cover
