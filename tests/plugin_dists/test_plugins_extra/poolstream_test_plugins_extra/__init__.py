"""A minimal vLLM-style plugin: upper-cases texts, returns their embedding sizes."""

from __future__ import annotations

from typing import Any

from poolstream.entrypoints.protocol import IOProcessorResponse
from poolstream.plugins.io_processors.interface import IOProcessor


def register() -> str:
    return "poolstream_test_plugins_extra.UpperProcessor"


class UpperProcessor(IOProcessor[list, list]):
    def parse_request(self, request: Any) -> list:
        data = getattr(request, "data", request)
        if not isinstance(data, dict) or not isinstance(data.get("texts"), list):
            raise ValueError("Unable to parse request")
        return [str(t).upper() for t in data["texts"]]

    def pre_process(self, prompt: list, request_id=None, **kwargs):
        return prompt

    def post_process(self, model_output, request_id=None, **kwargs) -> list:
        return [int(o.outputs.data.numel()) for o in model_output]

    def output_to_response(self, plugin_output: list) -> IOProcessorResponse:
        return IOProcessorResponse(data={"sizes": plugin_output})
