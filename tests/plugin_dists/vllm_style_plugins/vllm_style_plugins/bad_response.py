"""A plugin whose response cannot be encoded, or whose hooks fail in ways vLLM maps to
500: each must reach the client as a documented status with details, never UNKNOWN."""

from __future__ import annotations

from typing import Any

from vllm.entrypoints.pooling.pooling.protocol import IOProcessorRequest, IOProcessorResponse
from vllm.plugins.io_processors.interface import IOProcessor
from vllm.pooling_params import PoolingParams


class _Opaque:
    pass


class BadResponseProcessor(IOProcessor[dict, Any]):
    _mode: str = ""

    def parse_request(self, request: Any) -> dict:
        data = request.data if isinstance(request, IOProcessorRequest) else request
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if data.get("mode") == "parse_keyerror":
            raise KeyError("missing")
        return data

    def pre_process(self, prompt: dict, request_id: str | None = None, **kwargs: Any):
        # vLLM runs this request's params hook right after, so the mode may wait on self.
        self._mode = str(prompt.get("mode", ""))
        if prompt.get("mode") == "system_exit":
            raise SystemExit(3)
        if prompt.get("mode") == "bad_prompt":
            return [object()]
        return ["hello"]

    def validate_or_generate_params(self, params: PoolingParams | None = None) -> Any:
        return "not params" if self._mode == "bad_params" else PoolingParams()

    def post_process(self, model_output, request_id: str | None = None, **kwargs: Any) -> Any:
        if self._mode == "post_runtime":
            raise RuntimeError("boom in post_process")
        if self._mode == "post_interrupt":
            raise KeyboardInterrupt  # from plugin code in a worker thread, not a signal
        return self._mode

    def output_to_response(self, plugin_output: Any) -> IOProcessorResponse:
        if plugin_output == "opaque":
            return IOProcessorResponse(data={"x": _Opaque()})
        if plugin_output == "set_and_bytes":
            return IOProcessorResponse(data={"s": {3}, "b": b"\xff\x00"})
        return IOProcessorResponse(data={"mode": plugin_output})
