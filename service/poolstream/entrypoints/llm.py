"""The in-process API: vLLM's offline ``LLM.encode`` with a ``{"data": ...}`` prompt.

``AsyncLLM`` runs on the caller's event loop; ``LLM`` is its synchronous
wrapper (it runs an event loop in a background thread, so it also works
inside notebooks that already run one). Both load the model and select the
plugin with exactly the server's rules (argument over config.json).

    llm = LLM(io_processor_plugin="text_embedding")     # embedded model
    [out] = llm.encode({"data": {"texts": ["a", "b"], "similarity": True}})
    out.outputs  # the plugin's output (post_process result)
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar, cast

from poolstream.config import EngineConfig, LimitsConfig, ModelConfig, PoolstreamConfig, embedded_model_config
from poolstream.entrypoints.protocol import IOProcessorRequest, IOProcessorResponse
from poolstream.inputs import PromptType
from poolstream.outputs import PoolingRequestOutput
from poolstream.plugins.io_processors import IOProcessorSelection, select_io_processor
from poolstream.plugins.io_processors.pipeline import OutputObserver, PluginPipeline, normalize_prompt
from poolstream.pooling_params import PoolingParams
from poolstream.utils import merge_async_iterators

T = TypeVar("T")

_NO_PLUGIN = (
    "No IOProcessor plugin installed. Please refer to the documentation and to the "
    "'prithvi_geospatial_mae_io_processor' offline inference example for more details."
)


def build_config(
    model: str | None,
    io_processor_plugin: str | None,
    engine_config: EngineConfig | None = None,
    limits: LimitsConfig | None = None,
    **config_kwargs: Any,
) -> PoolstreamConfig:
    if model is None:
        model_config = embedded_model_config(io_processor_plugin)
    else:
        model_config = ModelConfig.resolve(model, io_processor_plugin=io_processor_plugin)
    return PoolstreamConfig(
        model_config=model_config,
        engine_config=engine_config or EngineConfig(),
        limits=limits or LimitsConfig(),
        **config_kwargs,
    )


def _truncation(truncate_prompt_tokens: int | None, tokenization_kwargs: Mapping[str, Any] | None) -> int | None:
    """The token limit from vLLM's two ways of asking for one (``-1``: the model's maximum)."""
    if truncate_prompt_tokens is not None:
        return None if truncate_prompt_tokens == -1 else int(truncate_prompt_tokens)
    kwargs = tokenization_kwargs or {}
    if kwargs.get("truncation") and kwargs.get("max_length") is not None:
        return int(kwargs["max_length"])
    return None


class AsyncLLM:
    """Model + plugin in this process, on the current event loop."""

    def __init__(self, config: PoolstreamConfig, selection: IOProcessorSelection, engine: Any):
        self.config = config
        self.selection = selection
        self.engine = engine
        self.pipeline = (
            PluginPipeline(selection.processor, engine, config.limits.max_prompts_per_request, config.limits)
            if selection.processor is not None
            else None
        )

    @classmethod
    async def create(
        cls,
        model: str | None = None,
        io_processor_plugin: str | None = None,
        engine_config: EngineConfig | None = None,
        **config_kwargs: Any,
    ) -> "AsyncLLM":
        from poolstream.engine import AsyncEngine

        config = build_config(model, io_processor_plugin, engine_config, **config_kwargs)
        selection = select_io_processor(config, io_processor_plugin)
        engine = await asyncio.to_thread(AsyncEngine.from_config, config)
        await engine.start()
        return cls(config, selection, engine)

    @property
    def io_processor(self):
        return self.selection.processor

    async def process(
        self,
        data: Any,
        request_id: str | None = None,
        priority: int = 0,
        params: PoolingParams | None = None,
        observer: OutputObserver | None = None,
    ) -> IOProcessorResponse:
        """Run the plugin pipeline on ``data``; returns ``output_to_response``'s result."""
        result = await self._run_plugin(data, request_id, priority, params, observer)
        return result.response

    async def _run_plugin(self, data, request_id, priority, params, observer=None, whole_request=None):
        if self.pipeline is None:
            raise ValueError(_NO_PLUGIN)
        rid = request_id or f"pool-{uuid.uuid4().hex}"
        request = IOProcessorRequest(data=data, model=self.config.model_config.name, priority=priority, params=params)
        return await self.pipeline.run(request, request_id=rid, observer=observer, whole_request=whole_request)

    async def encode(
        self,
        prompts: PromptType | Mapping[str, Any] | Sequence[PromptType],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        *,
        truncate_prompt_tokens: int | None = None,
        use_tqdm: Any = True,
        lora_request: Any = None,
        pooling_task: str | None = None,
        tokenization_kwargs: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        priority: int = 0,
    ) -> list[PoolingRequestOutput]:
        """vLLM's ``LLM.encode`` signature and semantics.

        A dict prompt with ``"data"`` goes through the plugin, as vLLM does: an E1 plugin's
        ``parse_request`` gets the whole prompt dict, an E2/E3 plugin's ``parse_data`` gets
        its ``data``; ``pooling_params`` go through the plugin's params hook. Other prompts
        are encoded directly, with ``pooling_task`` as the params' task (the pooler).
        ``truncate_prompt_tokens`` (or ``tokenization_kwargs={"truncation": True,
        "max_length": N}``) cuts text prompts to N tokens. ``use_tqdm`` is accepted and
        ignored (no progress bar); ``lora_request`` is refused (no adapters here).
        """
        if lora_request is not None:
            raise ValueError("LoRA adapters are not supported by poolstream (lora_request must be None)")
        if isinstance(pooling_params, Sequence):
            if len({id(p) for p in pooling_params}) > 1:
                raise ValueError("poolstream takes one PoolingParams for all prompts of a call")
            pooling_params = pooling_params[0] if pooling_params else None
        limit = _truncation(truncate_prompt_tokens, tokenization_kwargs)
        if limit is not None:
            pooling_params = (pooling_params or PoolingParams()).clone(truncate_prompt_tokens=limit)
        if isinstance(prompts, Mapping) and "data" in prompts:
            data_prompt = cast(Mapping[str, Any], prompts)
            if pooling_task not in (None, "plugin"):
                raise ValueError(
                    f"A prompt with 'data' is a plugin request: pooling_task must be 'plugin', got {pooling_task!r}"
                )
            if data_prompt["data"] is None:
                raise ValueError(
                    "The 'data' field of the prompt is expected to contain the prompt data and it "
                    "cannot be None."
                )
            result = await self._run_plugin(
                data_prompt["data"], request_id, priority, pooling_params, whole_request=dict(data_prompt)
            )
            return [
                PoolingRequestOutput(
                    request_id=result.response.request_id or "",
                    outputs=result.output,
                    prompt_token_ids=[],
                    num_cached_tokens=0,
                    finished=True,
                )
            ]
        prompt_list = [prompts] if isinstance(prompts, (str, Mapping)) else list(prompts)
        prompt_list = [normalize_prompt(p) for p in prompt_list]  # vLLM 0.15+'s nested multimodal layout
        if pooling_task is not None and pooling_task != "plugin":
            pooling_params = (pooling_params or PoolingParams()).clone(task=pooling_task)
        rid = request_id or f"pool-{uuid.uuid4().hex}"
        streams = [
            self.engine.encode(p, pooling_params, f"{rid}-{i}", priority=priority)
            for i, p in enumerate(prompt_list)
        ]
        results: list[PoolingRequestOutput | None] = [None] * len(prompt_list)
        async for index, out in merge_async_iterators(*streams):
            results[index] = out
        return results  # type: ignore[return-value]

    async def stream(self, data: Any, request_id: str | None = None) -> AsyncIterator[Any]:
        """Yield ``(index, PoolingRequestOutput)`` as prompts finish, then the response."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(
            self.process(data, request_id, observer=lambda i, o, c, t: queue.put_nowait((i, o)))
        )
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield item
            yield task.result()
        finally:
            task.cancel()

    async def close(self) -> None:
        await self.engine.shutdown()


class LLM:
    """Synchronous in-process API (vLLM's ``LLM``), backed by ``AsyncLLM`` on a private loop."""

    def __init__(
        self,
        model: str | None = None,
        io_processor_plugin: str | None = None,
        engine_config: EngineConfig | None = None,
        **config_kwargs: Any,
    ):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="poolstream-llm", daemon=True)
        self._thread.start()
        try:
            self._llm: AsyncLLM = self._run(
                AsyncLLM.create(model, io_processor_plugin, engine_config, **config_kwargs)
            )
        except BaseException:
            self._stop_loop()
            raise

    @property
    def io_processor(self):
        return self._llm.io_processor

    @property
    def config(self) -> PoolstreamConfig:
        return self._llm.config

    def encode(self, prompts: Any, pooling_params: Any = None, **kwargs: Any) -> list[PoolingRequestOutput]:
        """vLLM's ``LLM.encode`` (``pooling_task``, ``use_tqdm``, ``truncate_prompt_tokens``,
        ``tokenization_kwargs``, ``lora_request``); see ``AsyncLLM.encode``."""
        return self._run(self._llm.encode(prompts, pooling_params, **kwargs))

    def process(self, data: Any, **kwargs: Any) -> IOProcessorResponse:
        return self._run(self._llm.process(data, **kwargs))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._llm.close())
            self._stop_loop()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
