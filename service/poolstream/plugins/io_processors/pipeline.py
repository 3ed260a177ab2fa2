"""The plugin pipeline: payload -> prompts -> engine -> plugin output.

Shared by the gRPC handlers (Process, ProcessStream) and the in-process
``LLM`` API, so both behave the same:

1. ``parse_request`` then ``pre_process_async`` -> one prompt or a list (a
   single prompt is wrapped);
2. ``validate_or_generate_params`` with the request's params;
3. every prompt is submitted at once as ``<request id>-<i>`` with the
   request's priority (and deadline);
4. outputs are merged in completion order as ``(i, output)`` and fed to
   ``post_process_async`` *while the engine still produces them*; an observer
   callback sees each one first (ProcessStream streams it to the client);
5. ``output_to_response`` builds the response.

Whatever way the call ends (error, cancel, deadline), every sub-request still
queued is aborted in the engine.

Sync plugin hooks that the plugin did not wrap in its own ``*_async``
override run in a worker thread, so plugin CPU work never stalls the event
loop that serves other requests.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from poolstream.config import LimitsConfig
from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors.interface import IOProcessor
from poolstream.pooling_params import PoolingParams
from poolstream.prompt_costs import check_prompt_list
from poolstream.utils import merge_async_iterators


class PayloadError(ValueError):
    """The payload was rejected by parse_request or pre_process (-> INVALID_ARGUMENT)."""


class TooManyPromptsError(ValueError):
    """The plugin produced more prompts than the server allows (-> INVALID_ARGUMENT)."""


class PluginFailedError(Exception):
    """A plugin hook raised something other than ValueError/TypeError (-> INTERNAL).

    ``stage`` is "pre_process", "post_process" or "output_to_response".
    """

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage


class PromptEncoder(Protocol):
    """The part of the engine the pipeline needs."""

    def encode(
        self,
        prompt: Any,
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> AsyncIterator[PoolingRequestOutput]: ...

    def abort(self, request_ids: str | Sequence[str]) -> None: ...


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
        cls = type(processor)
        # Run the sync hooks in a thread only when the plugin kept the defaults.
        self._default_pre = cls.pre_process_async is IOProcessor.pre_process_async
        self._default_post = cls.post_process_async is IOProcessor.post_process_async
        # vLLM's params hook gets no request; ours also passes it when the
        # plugin's signature accepts `request` (or **kwargs).
        self._params_take_request = _accepts_kwarg(processor.validate_or_generate_params, "request")

    async def run(
        self,
        request: IOProcessorRequest,
        request_id: str,
        deadline: float | None = None,
        observer: OutputObserver | None = None,
        on_prompt_count: Callable[[int], None] | None = None,
    ) -> PipelineResult:
        proc = self.processor
        request.request_id = request_id

        # 1. Parse and pre-process: ValueError/TypeError are the client's fault.
        try:
            validated = proc.parse_request(request)
            if self._default_pre:
                prompts = await asyncio.to_thread(proc.pre_process, validated, request_id, request=validated)
            else:
                prompts = await proc.pre_process_async(validated, request_id=request_id, request=validated)
        except (ValueError, TypeError) as e:
            raise PayloadError(str(e)) from e
        except RecursionError as e:  # a payload nested deeper than the plugin's parser goes
            raise PayloadError(f"the payload is nested too deeply to parse ({e})") from e
        except Exception as e:
            raise PluginFailedError("pre_process", e) from e
        prompt_list = _as_prompt_list(prompts)
        if len(prompt_list) > self.max_prompts:
            raise TooManyPromptsError(
                f"The plugin produced {len(prompt_list)} prompts; this server allows at most "
                f"{self.max_prompts} per request (--max-prompts-per-request)."
            )
        if self.limits is not None:
            check_prompt_list(prompt_list, self.limits)
        if on_prompt_count is not None:
            on_prompt_count(len(prompt_list))

        # 2. Params.
        try:
            if self._params_take_request:
                params = proc.validate_or_generate_params(request.params, request=validated)
            else:
                params = proc.validate_or_generate_params(request.params)
        except (ValueError, TypeError) as e:
            raise PayloadError(str(e)) from e

        # 3. Submit everything at once.
        sub_ids = [f"{request_id}-{i}" for i in range(len(prompt_list))]
        streams = [
            self.engine.encode(p, params, sid, priority=request.priority, deadline=deadline)
            for p, sid in zip(prompt_list, sub_ids)
        ]
        merged = merge_async_iterators(*streams) if streams else _empty()
        stats = {"completed": 0, "tokens": 0}
        tapped = self._tap(merged, len(prompt_list), stats, observer)

        # 4. Post-process while the engine runs.
        try:
            try:
                if self._default_post:
                    collected = [pair async for pair in tapped]
                    collected.sort(key=lambda pair: pair[0])
                    outputs = [o for _, o in collected]
                    output = await asyncio.to_thread(
                        proc.post_process, outputs, request_id, request=validated
                    )
                else:
                    output = await proc.post_process_async(
                        model_output=tapped, request_id=request_id, request=validated
                    )
            except _EngineFailure as e:
                raise e.cause from None
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as e:
                if isinstance(e.__context__, _EngineFailure):
                    raise e.__context__.cause from None
                raise PluginFailedError("post_process", e) from e
        finally:
            await tapped.aclose()
            if stats["completed"] < len(sub_ids):
                self.engine.abort(sub_ids)

        # 5. The response.
        try:
            response = proc.output_to_response(output)
        except Exception as e:
            raise PluginFailedError("output_to_response", e) from e
        if not isinstance(response, IOProcessorResponse):
            response = IOProcessorResponse(data=response)
        if not response.request_id:
            response.request_id = request_id
        return PipelineResult(output, response, len(prompt_list), stats["tokens"])

    @staticmethod
    async def _tap(
        merged: AsyncIterator[tuple[int, PoolingRequestOutput]],
        total: int,
        stats: dict[str, int],
        observer: OutputObserver | None,
    ) -> AsyncIterator[tuple[int, PoolingRequestOutput]]:
        try:
            async for index, output in merged:
                stats["completed"] += 1
                stats["tokens"] += _cost(output)
                if observer is not None:
                    observer(index, output, stats["completed"], total)
                yield index, output
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:  # an engine error, not the plugin's
            raise _EngineFailure(e) from e
        finally:
            aclose = getattr(merged, "aclose", None)
            if aclose is not None:
                await aclose()


def _accepts_kwarg(func: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _as_prompt_list(prompts: Any) -> list[Any]:
    # vLLM #28273: a single prompt (a dict or a str) must not be iterated.
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Sequence):
        return [prompts]
    return list(prompts)


def _cost(output: PoolingRequestOutput) -> int:
    if output.prompt_token_ids:
        return len(output.prompt_token_ids)
    return 1


async def _empty() -> AsyncIterator[tuple[int, PoolingRequestOutput]]:
    return
    yield  # pragma: no cover  (makes this an async generator)


def monotonic_deadline(time_remaining: float | None) -> float | None:
    """A gRPC ``time_remaining()`` as an absolute ``time.monotonic()`` deadline."""
    return None if time_remaining is None else time.monotonic() + time_remaining
