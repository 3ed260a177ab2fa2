"""The plugin pipeline: payload -> prompts -> engine -> plugin output.

Shared by the gRPC handlers (Process, ProcessStream) and the in-process
``LLM`` API, so both behave the same:

1. ``parse_request`` (E1) or ``parse_data`` (E2/E3), then ``pre_process_async`` ->
   one prompt or a list (a single prompt is wrapped; vLLM 0.15+'s nested
   multimodal layout is flattened);
2. ``validate_or_generate_params`` (E1) or ``merge_pooling_params`` (E2/E3) with the
   request's params; the ``task`` the plugin sets goes to the engine unchanged;
3. every prompt is submitted at once as ``<request id>-<i>`` with the
   request's priority (and deadline);
4. outputs arrive in completion order as ``(i, output)`` and fed to
   ``post_process_async`` *while the engine still produces them*; an observer
   callback sees each one first (ProcessStream streams it to the client);
5. ``output_to_response`` builds the response, encoded here as the client will
   get it (pydantic models as FastAPI would serialise them, see response.py).

Whatever way the call ends (error, cancel, deadline), every sub-request still
queued is aborted in the engine.

Sync plugin hooks run in a worker thread, so plugin CPU work never stalls the
event loop that serves other requests; by default one at a time per plugin,
with one request's parse, pre_process and params hook as one step, which is
the ordering vLLM gives (see ``PluginPipeline.__init__``). Hooks get
``request=`` (the raw ``IOProcessorRequest``, vLLM's meaning) and
``parsed_request=`` (the parsed input) when their signature accepts them
(hooks.py). Errors: ``ValueError``/``TypeError`` from parsing, pre-processing
or the params hook are the payload's (``PayloadError``); anything else a hook
raises or returns that cannot be used is the plugin's (``PluginFailedError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from poolstream.config import LimitsConfig
from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse
from poolstream.inputs import prompt_kind
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors.compat_types import native_request, to_pooling_params
from poolstream.plugins.io_processors.hooks import PluginHooks
from poolstream.plugins.io_processors.interface import IOProcessor
from poolstream.plugins.io_processors.response import normalize_response
from poolstream.pooling_params import PoolingParams
from poolstream.prompt_costs import check_prompt_list

T = TypeVar("T")


class PayloadError(ValueError):
    """The payload was rejected by parse_request or pre_process (-> INVALID_ARGUMENT)."""


class TooManyPromptsError(ValueError):
    """The plugin produced more prompts than the server allows (-> INVALID_ARGUMENT)."""


class PluginFailedError(Exception):
    """A plugin hook raised something other than ValueError/TypeError (-> INTERNAL).

    ``stage`` is "parse_request", "pre_process", "params", "post_process" or
    "output_to_response".
    """

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage


class PromptEncoder(Protocol):
    """The part of the engine the pipeline needs (engine/group.py: submit a group, iterate, close)."""

    def submit_group(
        self,
        prompts: Sequence[Any],
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> Any: ...


# Submits a group of prompts: (prompts, params, request_id, priority, deadline) -> PromptGroup.
SubmitGroup = Callable[..., Any]


# Called with (index, output, completed, total) for each finished prompt.
OutputObserver = Callable[[int, PoolingRequestOutput, int, int], None]


@dataclass
class PipelineResult:
    """What a plugin request produced."""

    output: Any  # the plugin's post-processed output
    response: IOProcessorResponse  # output_to_response(output), request_id filled
    prompt_count: int
    prompt_tokens: int


class _EngineFailure(Exception):
    """Carries an engine error through the plugin's post_process_async untouched."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class PluginPipeline:
    """Runs plugin requests against an engine."""

    def __init__(self, processor: IOProcessor, engine: PromptEncoder, max_prompts_per_request: int,
                 limits: LimitsConfig | None = None):
        self.processor = processor
        self.engine = engine
        self.max_prompts = max_prompts_per_request
        self.limits = limits  # per-request cost caps over the plugin's prompts (prompt_costs.py)
        self.hooks = PluginHooks.of(processor, takes_renderer=getattr(processor, "renderer", None) is not None)
        # vLLM runs every sync hook on its event loop, so for one request nothing runs
        # between its pre_process and its params hook, and plugins rely on that (state
        # stashed on self in pre_process, popped in the params hook). poolstream runs
        # sync hooks in worker threads (the serving loop stays free) but one at a time
        # per plugin, parse + pre_process + params as one step, unless the plugin
        # declares ``concurrent_hooks = True``.
        self._serial = not getattr(processor, "concurrent_hooks", False)
        self._lock: asyncio.Lock | None = None

    async def run(
        self,
        request: IOProcessorRequest,
        request_id: str,
        deadline: float | None = None,
        observer: OutputObserver | None = None,
        on_prompt_count: Callable[[int], None] | None = None,
        whole_request: Any = None,
        submit: SubmitGroup | None = None,
    ) -> PipelineResult:
        """Run one plugin request. ``whole_request`` is what ``parse_request`` receives
        (default: ``request``; offline, vLLM passes the whole prompt dict). ``submit``
        (default: the engine's ``submit_group``) lets the serving core track the call's
        prompts (its CallRecord and metrics)."""
        proc, hooks = self.processor, self.hooks
        request.request_id = request_id
        raw = native_request(request)  # vLLM's own class where vLLM is installed
        parse_input = raw if whole_request is None else whole_request

        # 1-2. Parse, pre-process and params: ValueError/TypeError are the client's fault.
        def prepare(with_pre: bool) -> tuple[Any, Any, PoolingParams | None]:
            parsed = _stage("parse_request", hooks.parse, proc, parse_input, request.data)
            prompts = None
            if with_pre:
                prompts = _stage(
                    "pre_process", proc.pre_process, parsed, request_id=request_id,
                    **hooks.extra("pre_process", request=raw, parsed_request=parsed),
                )
                params = _stage("params", hooks.params, proc, request.params, request=raw, parsed_request=parsed)
                return parsed, prompts, _checked_params(params)
            return parsed, prompts, None

        if hooks.default_pre:
            parsed, prompts, params = await self._sync(prepare, True)
        else:
            parsed, _, _ = await self._sync(prepare, False)
            try:
                prompts = await proc.pre_process_async(
                    parsed, request_id=request_id,
                    **hooks.extra("pre_process_async", request=raw, parsed_request=parsed),
                )
            except (ValueError, TypeError) as e:
                raise PayloadError(str(e)) from e
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except BaseException as e:  # SystemExit & co. from a plugin are its failure too
                raise PluginFailedError("pre_process", e) from e
            try:
                raw_params = await self._sync(
                    _stage, "params", hooks.params, proc, request.params, request=raw, parsed_request=parsed
                )
                params = _checked_params(raw_params)
            except BaseException:
                if _is_prompt_stream(prompts):
                    await _close_stream(prompts)
                raise
        # A plugin may stream its prompts (an async iterable with a len(), e.g. windows handed
        # out while its input decodes): they are submitted as they come (the len() is checked
        # against the limit and reported up front).
        streamed = _is_prompt_stream(prompts)
        try:
            # A prompt of the wrong shape is the plugin's bug, not the client's payload.
            prompt_list = [] if streamed else [normalize_prompt(p) for p in _as_prompt_list(prompts)]
            for prompt in prompt_list:
                prompt_kind(prompt)
        except (ValueError, TypeError) as e:
            raise PluginFailedError("pre_process", e) from e
        total = len(prompts) if streamed else len(prompt_list)
        if total > self.max_prompts:
            if streamed:
                await _close_stream(prompts)
            raise TooManyPromptsError(
                f"The plugin produced {total} prompts; this server allows at most "
                f"{self.max_prompts} per request (--max-prompts-per-request)."
            )
        if self.limits is not None:
            check_prompt_list(prompt_list, self.limits)
        if on_prompt_count is not None:
            on_prompt_count(total)

        # 3. Submit everything at once (prompt i runs as f"{request_id}-{i}"); a prompt
        # stream is submitted prompt by prompt, each as soon as the plugin yields it.
        submit_group = submit or self.engine.submit_group
        group: Any
        if streamed:
            group = _StreamGroup(prompts, submit_group, params, request_id, request.priority, deadline, total)
        else:
            group = submit_group(prompt_list, params, request_id, request.priority, deadline)
        stats = {"completed": 0, "tokens": 0}
        tapped = self._tap(group, total, stats, observer)
        post_kwargs = hooks.extra(
            "post_process" if hooks.default_post else "post_process_async", request=raw, parsed_request=parsed
        )

        # 4. Post-process while the engine runs.
        try:
            try:
                if hooks.default_post:
                    collected = [pair async for pair in tapped]
                    collected.sort(key=lambda pair: pair[0])
                    outputs = [o for _, o in collected]
                    output = await self._sync(
                        _plugin_call, "post_process", proc.post_process, outputs, request_id=request_id, **post_kwargs
                    )
                else:
                    output = await proc.post_process_async(model_output=tapped, request_id=request_id, **post_kwargs)
            except _EngineFailure as e:
                raise e.cause from None
            except (asyncio.CancelledError, KeyboardInterrupt, PluginFailedError):
                raise
            except BaseException as e:
                if isinstance(e.__context__, _EngineFailure):
                    raise e.__context__.cause from None
                raise PluginFailedError("post_process", e) from e
        finally:
            await tapped.aclose()
            group.close()  # aborts every prompt not finished

        # 5. The response, encoded as the client will get it (a failure here is the plugin's).
        def respond() -> IOProcessorResponse:
            try:
                response = proc.output_to_response(output)
                return normalize_response(response, request_id, tuple(getattr(proc, "output_types", ()) or ()))
            except BaseException as e:  # runs in a worker thread: nothing here is a signal
                raise PluginFailedError("output_to_response", e) from e

        response = await self._sync(respond)
        return PipelineResult(output, response, total, stats["tokens"])

    async def _sync(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a sync hook in a worker thread; one at a time unless the plugin allows more."""
        if not self._serial:
            return await asyncio.to_thread(func, *args, **kwargs)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            # The lock is held until the thread returns, even if this call is cancelled,
            # so a cancelled request's hook never overlaps the next request's.
            task = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                with contextlib.suppress(BaseException):
                    await task
                raise

    @staticmethod
    async def _tap(
        group: Any,
        total: int,
        stats: dict[str, int],
        observer: OutputObserver | None,
    ) -> AsyncGenerator[tuple[int, PoolingRequestOutput], None]:
        async for index, output in group:
            if isinstance(output, BaseException):  # an engine error, not the plugin's
                raise _EngineFailure(output) from output
            stats["completed"] += 1
            stats["tokens"] += _cost(output)
            if observer is not None:
                observer(index, output, stats["completed"], total)
            yield index, output


class _StreamGroup:
    """A prompt group over a plugin's prompt stream (engine/group.py's contract): each prompt
    is submitted, as a group of one, when the plugin yields it; results in completion order.
    A stream that refuses its input reports PayloadError as a result (the payload's fault);
    ``close()`` stops the stream and aborts every prompt not finished."""

    def __init__(self, prompts: Any, submit: Any, params: PoolingParams | None, request_id: str, priority: int,
                 deadline: float | None, total: int):
        self.size = total
        self._left = total
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._arrivals: list[float] = []
        self._groups: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._feeder = asyncio.ensure_future(self._feed(prompts, submit, params, request_id, priority, deadline))

    async def _feed(self, prompts: Any, submit: Any, params: Any, request_id: str, priority: int,
                    deadline: float | None) -> None:
        it = prompts.__aiter__()
        i = 0
        try:
            async for prompt in it:
                if i >= self.size:
                    raise PluginFailedError("pre_process", RuntimeError(
                        f"the plugin's prompt stream yielded more than the {self.size} prompts its len() announced"))
                try:
                    prompt = normalize_prompt(prompt)
                    prompt_kind(prompt)
                except (ValueError, TypeError) as e:
                    raise PluginFailedError("pre_process", e) from e
                group = submit([prompt], params, f"{request_id}-{i}", priority, deadline)
                self._groups.append(group)
                self._tasks.append(asyncio.ensure_future(self._drain(i, f"{request_id}-{i}", group)))
                i += 1
        except asyncio.CancelledError:
            raise
        except (ValueError, TypeError) as e:  # the plugin's stream refused its input (e.g. a corrupt strip)
            self._put(i, PayloadError(str(e)))
        except BaseException as e:
            self._put(i, e)
        finally:
            await _close_stream(it)

    async def _drain(self, index: int, name: str, group: Any) -> None:
        async for _, result in group:
            if not isinstance(result, BaseException):
                result.request_id = name  # the engine ran it as a group of one
            self._put(index, result)

    def _put(self, index: int, result: Any) -> None:
        self._arrivals.append(time.monotonic())
        self._queue.put_nowait((index, result))

    def __aiter__(self) -> "_StreamGroup":
        return self

    async def __anext__(self) -> tuple[int, Any]:
        if self._left <= 0:
            raise StopAsyncIteration
        item = await self._queue.get()
        self._arrivals.pop(0)
        self._left -= 1
        if isinstance(item[1], BaseException) and not isinstance(item[1], Exception):
            raise item[1]
        return item

    def track_arrivals(self) -> None:
        return None

    def pending_since(self) -> float | None:
        return self._arrivals[0] if self._arrivals else None

    def outstanding(self) -> int:
        return max(0, self._left - self._queue.qsize())

    def close(self) -> None:
        self._feeder.cancel()
        for task in self._tasks:
            task.cancel()
        for group in self._groups:
            group.close()


def _stage(stage: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a parse/pre-process/params hook: ValueError/TypeError (pydantic's
    ValidationError included) are the payload's fault, anything else the plugin's."""
    try:
        return func(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise PayloadError(str(e)) from e
    except RecursionError as e:  # a payload nested deeper than the plugin's parser goes
        raise PayloadError(f"the payload is nested too deeply to parse ({e})") from e
    except asyncio.CancelledError:
        raise
    except BaseException as e:  # SystemExit, KeyboardInterrupt & co. raised by the plugin's code
        raise PluginFailedError(stage, e) from e


def _plugin_call(stage: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a hook in a worker thread where anything it raises is the plugin's failure."""
    try:
        return func(*args, **kwargs)
    except asyncio.CancelledError:
        raise
    except BaseException as e:
        raise PluginFailedError(stage, e) from e


def _checked_params(params: Any) -> PoolingParams | None:
    """The params hook's result as poolstream PoolingParams; another type is the plugin's bug."""
    try:
        return to_pooling_params(params)
    except (TypeError, ValueError) as e:
        raise PluginFailedError("params", e) from e


def normalize_prompt(prompt: Any) -> Any:
    """vLLM 0.15+'s nested multimodal layout (``{"image": {"pixel_values": t}}``) flattened
    to the engine's named tensors (``{"pixel_values": t}``); the flat layout and other
    prompts pass unchanged. ``None`` entries (an input the plugin left out) are dropped."""
    if not isinstance(prompt, Mapping) or not isinstance(prompt.get("multi_modal_data"), Mapping):
        return prompt
    flat: dict[str, Any] = {}
    for name, value in prompt["multi_modal_data"].items():
        if isinstance(value, Mapping):  # one modality's named inputs
            for inner, tensor in value.items():
                if tensor is None:
                    continue
                if inner in flat:
                    raise ValueError(f"multi_modal_data names {inner!r} in more than one modality")
                flat[inner] = tensor
        elif value is not None:
            if name in flat:
                raise ValueError(f"multi_modal_data names {name!r} twice")
            flat[name] = value
    return {**prompt, "multi_modal_data": flat}


def _is_prompt_stream(prompts: Any) -> bool:
    return hasattr(prompts, "__aiter__") and hasattr(prompts, "__len__") and not isinstance(prompts, Sequence)


async def _close_stream(stream: Any) -> None:
    for name in ("aclose", "stop"):
        close = getattr(stream, name, None)
        if close is not None:
            await close()
            return


def _as_prompt_list(prompts: Any) -> list[Any]:
    # vLLM #28273: a single prompt (a dict or a str) must not be iterated.
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Sequence):
        return [prompts]
    return list(prompts)


def _cost(output: PoolingRequestOutput) -> int:
    if output.prompt_token_ids:
        return len(output.prompt_token_ids)
    return 1


def monotonic_deadline(time_remaining: float | None) -> float | None:
    """A gRPC ``time_remaining()`` as an absolute ``time.monotonic()`` deadline."""
    return None if time_remaining is None else time.monotonic() + time_remaining
