"""``AsyncEngine``: the asyncio-facing client of the engine core (vLLM's ``AsyncLLM``).

Runs on the event loop and never does model work: ``encode()`` validates
cheaply, admits the request against the queue bound, hands it to the core
thread through a thread-safe queue, and awaits a per-request future that the
core resolves in batches (one ``call_soon_threadsafe`` per batch).

    engine = await asyncio.to_thread(AsyncEngine.from_config, config)
    await engine.start()
    async for out in engine.encode("hello", PoolingParams(), "req-0"):
        print(out.outputs.data.shape)
    await engine.shutdown()

All methods must be called from the event loop thread that ran ``start()``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from poolstream.config import PoolstreamConfig
from poolstream.engine.core import EngineCore, Finished
from poolstream.engine.cpu_threads import engine_threads, run_in_fresh_thread, set_torch_threads
from poolstream.engine.errors import (
    DeadlineExceededError,
    EngineDeadError,
    EngineError,
    EngineOverloadedError,
    InvalidPromptError,
    RequestAbortedError,
    jittered_retry_delay,
)
from poolstream.engine.group import LocalGroup
from poolstream.engine.processor import InputProcessor, load_tokenizer
from poolstream.engine.request import EngineRequest, RequestStatus
from poolstream.engine.runner import ModelRunner, resolve_device, resolve_dtype
from poolstream.engine.scheduler import Scheduler
from poolstream.engine.stats import EngineStats, StatsTracker
from poolstream.inputs import PromptType
from poolstream.models.model_dir import read_model_dir
from poolstream.models.transformers_backend import select_model_class
from poolstream.outputs import PoolingRequestOutput
from poolstream.pooling_params import PoolingParams

logger = logging.getLogger(__name__)

# RetryInfo floor when the engine has no throughput estimate yet.
_MIN_RETRY_AFTER_S = 0.05


@dataclass(frozen=True)
class ModelInfo:
    """What GetServerInfo reports about the loaded model."""

    name: str
    path: str
    architecture: str
    output_shape: tuple[int, ...]
    output_dtype: torch.dtype  # of PoolingOutput.data, before any output_dtype conversion
    max_model_len: int
    pooling: str
    normalize: bool
    device: str  # resolved, e.g. "cpu" or "cuda:0"
    compute_dtype: torch.dtype
    tensor_inputs: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("embed",)  # pooling tasks served (PoolingParams.task)
    default_task: str = "embed"  # what task None / "plugin" / "encode" runs
    labels: tuple[str, ...] = ()  # classifier label names, index order
    backend: str = "native"  # "native" or "transformers"
    prompts: dict[str, str] = field(default_factory=dict)  # sentence-transformers prompts by name
    default_prompt_name: str | None = None
    task_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Characters per token of the text cut, and the prefix first tried for a text at
    # max_model_len tokens (engine/text_cut.py); 0 for a model without a tokenizer.
    text_chars_per_token: int = 0
    text_cut_chars: int = 0


def _padding_policy(device_type: str) -> dict[str, Any]:
    """How much padding a batch may carry (see Scheduler).

    NOTE(engine): on CPU the BERT encoder runs padded batches packed (its
    linear layers see real tokens only), so padding costs attention alone.
    Measured on a 2-core CPU with all-MiniLM-L6-v2 at 64 concurrent requests:
    (ratio 0.1, slack 32), (0.5, 512) and (1.0, 2048) gave the same throughput
    (204-210 prompts/s; batches of 14, 30 and 40), so the tight policy stays:
    smaller batches finish, and answer, sooner. On CUDA a forward is mostly
    launch overhead and runs padded, so larger, more padded batches win.
    """
    if device_type == "cuda":
        return {"pad_ratio": 0.5, "pad_slack_tokens": 2048}
    return {"pad_ratio": 0.1, "pad_slack_tokens": 32}


class AsyncEngine:
    def __init__(self, config: PoolstreamConfig, runner: ModelRunner, processor: InputProcessor,
                 model_info: ModelInfo, num_threads: int = 0):
        self.config = config
        ecfg = config.engine_config
        self._model_info = model_info
        self._lock = threading.Lock()  # guards request status transitions and stats
        self._stats = StatsTracker()
        self._max_queued = ecfg.max_queued_prompts
        scheduler = Scheduler(ecfg.max_num_batched_tokens, ecfg.max_num_seqs,
                              **_padding_policy(runner.device.type))
        self._core = EngineCore(runner, processor, scheduler, self._lock, self._stats, self._post,
                                num_threads=num_threads or engine_threads(ecfg.num_threads),
                                # Text models only: a tensor model's batches (rasters) are large
                                # ops that gain little, and two in flight would double their memory.
                                side_lane=(ecfg.cpu_side_lane and runner.device.type == "cpu"
                                           and not runner.spec.tensor_inputs))
        self._processor = processor
        self._requests: dict[str, EngineRequest] = {}  # in flight, by request id
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ------------------------------------------------------

    @classmethod
    def from_config(cls, config: PoolstreamConfig) -> "AsyncEngine":
        """Load the model (blocking: seconds; run it in a thread from async code)."""
        mcfg, ecfg = config.model_config, config.engine_config
        mdir = read_model_dir(mcfg.model)
        model_cls = select_model_class(mdir.architecture, ecfg.model_backend)
        device = resolve_device(ecfg.device)
        dtype = resolve_dtype(ecfg.dtype, device)
        threads = engine_threads(ecfg.num_threads)
        t0 = time.monotonic()

        def load() -> ModelRunner:
            set_torch_threads(threads)  # this thread only lives for the load
            model = model_cls.load(Path(mcfg.model), mcfg.hf_config, device, dtype)
            model.eval()
            runner = ModelRunner(model, device, dtype)
            runner.warmup()
            return runner

        # A short-lived thread: the OpenMP team the load creates ends with it (cpu_threads).
        runner = run_in_fresh_thread(load)
        model, spec = runner.model, runner.spec
        tokenizer = load_tokenizer(mdir.tokenizer_file) if spec.max_model_len > 0 else None
        vocab = int(spec.extra.get("vocab_size") or mcfg.hf_config.get("vocab_size") or 2**31 - 1)
        processor = InputProcessor(model, spec, tokenizer, vocab, prompts=mdir.prompts,
                                   default_prompt_name=mdir.default_prompt_name,
                                   model_name=f"{mcfg.name} ({mdir.architecture})", limits=config.limits)
        info = ModelInfo(
            name=mcfg.name, path=mcfg.model, architecture=mdir.architecture,
            output_shape=tuple(spec.output_shape), output_dtype=torch.float32,
            max_model_len=spec.max_model_len, pooling=spec.pooling, normalize=spec.normalize,
            device=str(device), compute_dtype=dtype, tensor_inputs=tuple(spec.tensor_inputs),
            extra=dict(spec.extra), tasks=tuple(spec.tasks), default_task=spec.default_task,
            labels=tuple(spec.labels), backend=spec.backend, prompts=dict(processor.prompts),
            default_prompt_name=processor.default_prompt_name,
            task_shapes=dict(spec.task_shapes) or {spec.default_task: tuple(spec.output_shape)},
            text_chars_per_token=processor.chars_per_token, text_cut_chars=processor.text_cut_chars(),
        )
        logger.info("loaded %s (%s) on %s/%s in %.2fs; %d torch threads", info.name, info.architecture,
                    info.device, dtype, time.monotonic() - t0, threads)
        return cls(config, runner, processor, info, threads)

    async def start(self) -> None:
        """Start the core thread; results are delivered to the running event loop.

        Returns once the core thread has set its torch thread count; a caller that
        confines its other threads (``cpu_threads.confine_other_threads``) does so after."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._core.start()

    async def shutdown(self) -> None:
        """Stop the core thread. The batch in flight completes; queued requests fail with
        EngineDeadError (draining is the server's job: stop admitting, wait, then shut down)."""
        if self._loop is None or self._core.thread is None:
            return
        self._core.stop()
        await asyncio.to_thread(self._core.thread.join)

    # ---- requests -------------------------------------------------------

    async def encode(
        self,
        prompt: PromptType,
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> AsyncGenerator[PoolingRequestOutput, None]:
        """Pool one prompt; yields exactly one output when its batch completes.

        Raises (on first iteration) EngineOverloadedError, InvalidPromptError,
        DeadlineExceededError (``deadline``, a time.monotonic() value, passed
        before batching), RequestAbortedError, EngineDeadError, EngineError.
        Cancelling or closing the consumer aborts the request.
        """
        # Closing the generator after the output has nothing left to abort: the request
        # has finished by then.
        yield await self.encode_one(prompt, params, request_id, priority, deadline)

    async def encode_one(
        self,
        prompt: PromptType,
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> PoolingRequestOutput:
        """``encode()`` as a coroutine that returns the output: same errors, and
        cancelling it aborts the request. The server's single-prompt path uses it
        (one await instead of an async generator to iterate and close)."""
        if self._loop is None:
            await self.start()
        req = self._admit(prompt, params or PoolingParams(), request_id, priority, deadline)
        try:
            return await req.future  # type: ignore[misc]
        except asyncio.CancelledError:
            self._abort(req, cancelled=True)
            raise
        finally:
            if self._requests.get(req.request_id) is req:
                del self._requests[req.request_id]

    def submit(
        self,
        prompt: PromptType,
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> EngineRequest:
        """Admit one prompt now, without awaiting: the request's ``future`` resolves with its
        output or its error. Admission errors raise here, as from ``encode_one``.

        For callers that admit many prompts in one step (the server's multi-prompt calls: one
        pass instead of a task and two coroutines per prompt). Each submitted request must be
        ``release()``d once its future is done or no longer wanted. Needs a started engine."""
        if self._loop is None:
            raise EngineError("the engine is not started: await start() first")
        return self._admit(prompt, params or PoolingParams(), request_id, priority, deadline)

    def submit_group(
        self,
        prompts: Sequence[PromptType],
        params: PoolingParams | None,
        request_id: str,
        priority: int = 0,
        deadline: float | None = None,
    ) -> LocalGroup:
        """Admit every prompt now as ``f"{request_id}-{i}"``; results in completion order
        (engine/group.py). An admission error is that prompt's result."""
        if self._loop is None:
            raise EngineError("the engine is not started: await start() first")
        params = params or PoolingParams()
        group = LocalGroup(self, len(prompts))
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, BaseException):  # a prompt the caller could not decode
                group._ready.append((i, prompt))
                continue
            try:
                group._add(i, self._admit(prompt, params, f"{request_id}-{i}", priority, deadline))
            except Exception as e:
                group._ready.append((i, e))
        group._arm()
        return group

    def release(self, req: EngineRequest) -> None:
        """Done with a ``submit()``ted request: abort it if it has not finished (its caller went
        away: it is never executed if still queued), and free its request id."""
        # Also when its future is already done: a future cancelled by whoever awaited it
        # leaves the request queued, and _abort() takes it out of the queue.
        self._abort(req, cancelled=True)
        if self._requests.get(req.request_id) is req:
            del self._requests[req.request_id]

    def abort(self, request_ids: str | Iterable[str]) -> None:
        """Abort requests by id. Queued ones are never executed; their encode() raises
        RequestAbortedError. Unknown or finished ids are ignored."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        for rid in ids:
            req = self._requests.get(rid)
            if req is not None:
                self._abort(req, cancelled=False)

    def _admit(self, prompt: PromptType, params: PoolingParams, request_id: str, priority: int,
               deadline: float | None) -> EngineRequest:
        kind, normalize, dims, task, activation = self._processor.check(prompt, params)
        seq = next(self._seq)
        request_id = request_id or f"engine-{seq}"
        if request_id in self._requests:
            raise InvalidPromptError(f"request id {request_id!r} is already in flight")
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceededError(f"request {request_id} arrived after its deadline")
        assert self._loop is not None
        req = EngineRequest(request_id=request_id, kind=kind, prompt=prompt, params=params,
                            normalize=normalize, dimensions=dims, priority=int(priority),
                            deadline=deadline, arrival=now, seq=seq, future=self._loop.create_future(),
                            task=task, activation=activation)
        st = self._stats
        with self._lock:
            if self._core.dead is not None:
                raise EngineDeadError(str(self._core.dead))
            if st.queued_prompts >= self._max_queued:
                st.prompts_rejected += 1
                wait = jittered_retry_delay(max(st.estimate_wait_s(), _MIN_RETRY_AFTER_S))
                raise EngineOverloadedError(
                    f"engine queue is full ({self._max_queued} prompts)", retry_after_s=wait)
            st.queued_prompts += 1
            st.prompts_admitted += 1
            self._core.submit(req)  # under the lock: see EngineCore._run_guarded
        self._requests[request_id] = req
        return req

    def _abort(self, req: EngineRequest, cancelled: bool) -> None:
        with self._lock:
            if req.status is RequestStatus.WAITING:
                req.status = RequestStatus.ABORTED  # the core skips it from now on
                self._core.scheduler.forget(req)  # its deadline entry must not keep it alive
                self._stats.queued_prompts -= 1
                self._stats.prompts_aborted += 1
        fut = req.future
        if fut is not None and not fut.done():
            if cancelled:
                fut.cancel()  # nobody is waiting: no "exception never retrieved" noise
            else:
                fut.set_exception(RequestAbortedError(f"request {req.request_id} was aborted"))

    def _post(self, finished: Finished) -> None:
        """Core thread -> event loop: one call per batch."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve, finished)

    @staticmethod
    def _resolve(finished: Finished) -> None:
        for req, result in finished:
            fut = req.future
            if fut is None or fut.done():
                continue  # aborted or cancelled meanwhile
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    # ---- introspection --------------------------------------------------

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info

    @property
    def stats(self) -> EngineStats:
        with self._lock:
            return self._stats.snapshot()

    def estimate_wait_s(self) -> float:
        """Seconds the queued and running prompts will take, from recent throughput (0 if unknown)."""
        with self._lock:
            return self._stats.estimate_wait_s()

    @property
    def is_running(self) -> bool:
        """True once started and until the core thread ends (health checks)."""
        return self._loop is not None and self._core.dead is None

    @property
    def dead_error(self) -> EngineDeadError | None:
        return self._core.dead
