"""The front doors' one way into the serving core (HTTP/JSON and TEI's gRPC API).

Every door admits, encodes and runs plugin requests through this module, with
the same rules as the poolstream gRPC handlers (``server/servicer.py``):
readiness and draining (UNAVAILABLE), the concurrent-call cap
(RESOURCE_EXHAUSTED with a retry delay), deadline-aware admission
(DEADLINE_EXCEEDED ``DEADLINE_TOO_SHORT``), ``--max-prompts-per-request``,
engine deadlines and aborts, the plugin watchdog, and one error table
(``server/errors.py``): a door only turns ``ServiceError`` into its own error
body. Metrics and timing come from the same ``ObservedEngine`` and the same
``CallContext`` marks as on gRPC.

Kept in one module so that moving onto the transport-neutral serving core
(``poolstream.serving``) changes this file and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from poolstream.engine.errors import jittered_retry_delay
from poolstream.entrypoints.protocol import IOProcessorRequest
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors.pipeline import OutputObserver, PipelineResult, monotonic_deadline
from poolstream.pooling_params import PoolingParams
from poolstream.server.errors import ServiceError, invalid_argument, to_service_error, with_field
from poolstream.server.metrics import ServerMetrics
from poolstream.server.state import ServerState
from poolstream.server.watchdog import run_plugin_guarded

NO_PLUGIN = (
    "No IOProcessor plugin is active, so /pooling with `data` is unavailable. Start the server with "
    "--io-processor-plugin NAME, or set \"io_processor_plugin\" in the model's config.json."
)


def unsupported_task(task: str, model: str, hint: str = "") -> ServiceError:
    """A task the served model cannot run (rerank on an embedding model, ...)."""
    return ServiceError(
        grpc.StatusCode.UNIMPLEMENTED,
        "TASK_NOT_SUPPORTED",
        f"the model {model!r} does not support the {task!r} task" + (f": {hint}" if hint else ""),
        metadata={"task": task},
    )


@dataclass(frozen=True)
class ModelFacts:
    """What the doors report about the served model (OpenAI /v1/models, TEI /info)."""

    name: str
    path: str
    architecture: str
    max_model_len: int
    output_shape: tuple[int, ...]
    tensor_inputs: tuple[str, ...]
    compute_dtype: str
    device: str
    tasks: tuple[str, ...] = ("embed",)  # the pooling tasks the model serves (PoolingParams.task)
    default_task: str = "embed"
    labels: tuple[str, ...] = ()  # classifier label names, index order

    @property
    def is_text(self) -> bool:
        return not self.tensor_inputs

    def serves(self, task: str) -> bool:
        """A text model with this task ("embed", "classify", "score", "token_embed", ...)."""
        return self.is_text and task in self.tasks

    @property
    def kind(self) -> str:
        """TEI's model type, from the default task: "embedding", "classifier" or "reranker"
        (a one-label classifier that scores pairs, as TEI classes cross-encoders)."""
        if self.default_task == "score" or (self.default_task == "classify" and len(self.labels) == 1
                                            and "score" in self.tasks):
            return "reranker"
        return "classifier" if self.default_task == "classify" else "embedding"

    @property
    def is_embedding(self) -> bool:
        """One vector per text: what /v1/embeddings, /embed and tei.v1.Embed serve."""
        return self.serves("embed")


class ServingCore:
    """Admission, encoding and plugin runs for the non-gRPC-native doors."""

    def __init__(self, state: ServerState, metrics: ServerMetrics | None = None):
        self.state = state
        self.metrics = metrics
        self._tokenizer: Any = None

    # -- what is served ------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.state.config.model_config.name

    @property
    def limits(self):
        return self.state.config.limits

    def facts(self) -> ModelFacts:
        engine = self.engine()
        mi = engine.model_info
        return ModelFacts(
            name=self.model_name,
            path=self.state.config.model_config.model,
            architecture=self.state.config.model_config.architecture,
            max_model_len=int(mi.max_model_len),
            output_shape=tuple(int(s) for s in mi.output_shape),
            tensor_inputs=tuple(mi.tensor_inputs),
            compute_dtype=str(mi.compute_dtype).removeprefix("torch."),
            device=str(mi.device),
            tasks=tuple(getattr(mi, "tasks", ("embed",))),
            default_task=str(getattr(mi, "default_task", "embed")),
            labels=tuple(getattr(mi, "labels", ())),
        )

    @property
    def ready(self) -> bool:
        return self.state.engine is not None and not self.state.draining

    @property
    def has_plugin(self) -> bool:
        return self.state.selection.processor is not None

    def tokenizer(self) -> Any:
        """The model's tokenizer (its own copy: the engine's mutates truncation on its thread)."""
        if self._tokenizer is None:
            from poolstream.engine.processor import load_tokenizer

            path = Path(self.state.config.model_config.model) / "tokenizer.json"
            tok = load_tokenizer(path if path.is_file() else None)
            if tok is None:
                raise unsupported_task("tokenize", self.model_name, "the model has no tokenizer.json")
            tok.no_truncation()
            tok.no_padding()
            self._tokenizer = tok
        return self._tokenizer

    def with_prompt(self, text: str, prompt_name: str | None, field_path: str = "prompt_name") -> str:
        """``text`` after the model's sentence-transformers prompt ``prompt_name`` (TEI's Tokenize)."""
        if not prompt_name:
            return text
        prompts = dict(getattr(self.engine().model_info, "prompts", None) or {})
        if prompt_name not in prompts:
            raise invalid_argument("INVALID_PARAMS", f"unknown prompt_name {prompt_name!r}; this model's prompts: "
                                   f"{', '.join(sorted(prompts)) or 'none'}", field_path)
        return prompts[prompt_name] + text

    # -- admission -------------------------------------------------------------
    def engine(self) -> Any:
        if self.state.draining:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "DRAINING", "the server is shutting down")
        if self.state.engine is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NOT_READY", "the model is still loading")
        return self.state.engine

    @contextlib.contextmanager
    def admitted(self, time_remaining: float | None) -> Iterator[None]:
        """One call in flight, with the gRPC handlers' admission rules; raises ServiceError."""
        state = self.state
        engine = self.engine()
        if state.active_calls >= self.limits.max_concurrent_calls:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_CALLS",
                f"{state.active_calls} calls in flight; the limit is "
                f"{self.limits.max_concurrent_calls} (--max-concurrent-calls)",
                retry_after_s=jittered_retry_delay(max(0.05, engine.estimate_wait_s())),
            )
        if time_remaining is not None:
            wait = engine.estimate_wait_s()
            if time_remaining <= 0 or wait > time_remaining:
                raise ServiceError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "DEADLINE_TOO_SHORT",
                    f"the deadline leaves {max(time_remaining, 0) * 1000:.0f} ms but the engine queue "
                    f"needs about {wait * 1000:.0f} ms before this call could start; "
                    "retry with a longer deadline",
                    metadata={"estimated_wait_s": f"{wait:.3f}", "time_remaining_s": f"{time_remaining:.3f}"},
                )
        state.active_calls += 1
        try:
            yield
        finally:
            state.active_calls -= 1

    def check_prompt_count(self, count: int, field_path: str) -> None:
        if count == 0:
            raise invalid_argument("INVALID_PROMPT", "at least one input is required", field_path)
        limit = self.limits.max_prompts_per_request
        if count > limit:
            raise invalid_argument(
                "TOO_MANY_PROMPTS", f"{count} inputs; at most {limit} per request (--max-prompts-per-request)",
                field_path,
            )

    # -- raw pooling -----------------------------------------------------------
    async def encode(
        self,
        prompts: Sequence[Any],
        params: PoolingParams,
        request_id: str,
        time_remaining: float | None,
        priority: int = 0,
        field_of: Callable[[int], str] = lambda i: f"input[{i}]",
    ) -> list[PoolingRequestOutput]:
        """Every prompt's output in prompt order; the first failing prompt fails the call
        (its error names the field) and aborts the others."""
        engine = self.engine()
        deadline = monotonic_deadline(time_remaining)
        if len(prompts) == 1:
            try:
                return [await engine.encode_one(prompts[0], params, f"{request_id}-0", priority, deadline)]
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise with_field(to_service_error(e), field_of(0)) from e
        done: asyncio.Queue[asyncio.Future] = asyncio.Queue()
        live: dict[asyncio.Future, tuple[int, Any]] = {}
        results: list[PoolingRequestOutput | None] = [None] * len(prompts)
        try:
            for i, prompt in enumerate(prompts):
                try:
                    sub = engine.submit(prompt, params, f"{request_id}-{i}", priority, deadline)
                except Exception as e:
                    raise with_field(to_service_error(e), field_of(i)) from e
                live[sub.req.future] = (i, sub)
                sub.req.future.add_done_callback(done.put_nowait)
            while live:
                fut = await done.get()
                entry = live.pop(fut, None)
                if entry is None:
                    continue
                i, sub = entry
                try:
                    results[i] = engine.collect(sub)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    raise with_field(to_service_error(e), field_of(i)) from e
        finally:
            for _, sub in live.values():  # an early end (error, cancel) aborts the rest now
                engine.drop(sub)
        return [r for r in results if r is not None]

    # -- plugin requests -------------------------------------------------------
    async def process(
        self,
        data: Any,
        params: PoolingParams | None,
        request_id: str,
        time_remaining: float | None,
        priority: int = 0,
        observer: OutputObserver | None = None,
        on_prompt_count: Callable[[int], None] | None = None,
    ) -> PipelineResult:
        """vLLM's /pooling with ``data``: the plugin pipeline under the plugin watchdog."""
        self.engine()
        pipeline = self.state.pipeline
        if pipeline is None:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "NO_PLUGIN", NO_PLUGIN)
        if data is None:
            raise invalid_argument("INVALID_PAYLOAD", "the request has no data payload", "data")
        io_request = IOProcessorRequest(data=data, model=self.model_name, priority=priority, params=params)
        deadline = monotonic_deadline(time_remaining)
        try:
            return await run_plugin_guarded(
                lambda obs, count: pipeline.run(
                    io_request, request_id=request_id, deadline=deadline, observer=obs, on_prompt_count=count
                ),
                observer,
                on_prompt_count,
                self.limits.plugin_timeout_s,
                self.metrics,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise with_field(to_service_error(e), "data") from e
