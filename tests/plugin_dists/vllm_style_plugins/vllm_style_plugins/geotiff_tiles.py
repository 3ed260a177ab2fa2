"""An E1 (vLLM 0.10.2-0.14) GeoTIFF segmentation plugin, in the shape of vLLM's test plugin
``prithvi_to_tiff`` and of the Prithvi plugin its design doc links (neither is published
on PyPI): it imports only from ``vllm``, takes ``{"data", "data_format", "out_data_format"}``
online (inside an ``IOProcessorRequest``) or offline (the whole prompt dict), tiles the
raster into one flat ``multi_modal_data={"pixel_values": ...}`` prompt per window, keeps
per-request state on ``self`` keyed by request id, and answers with pydantic models
(``IOProcessorResponse(data=ImageRequestOutput)``, base64 as ``bytes`` coerced by pydantic).
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from pydantic import BaseModel
from vllm.config import VllmConfig
from vllm.entrypoints.openai.protocol import IOProcessorRequest, IOProcessorResponse
from vllm.inputs.data import PromptType
from vllm.logger import init_logger
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor, IOProcessorInput, IOProcessorOutput

logger = init_logger(__name__)


class ImagePrompt(BaseModel):
    data_format: Literal["b64_json", "path"]
    image_format: str = "tiff"
    out_data_format: Literal["b64_json"] = "b64_json"
    data: Any


class ImageRequestOutput(BaseModel):
    type: Literal["b64_json"]
    format: str
    data: str
    request_id: str | None = None


class GeoTiffTilesProcessor(IOProcessor):
    def __init__(self, vllm_config: VllmConfig):
        super().__init__(vllm_config)
        hf = vllm_config.model_config.hf_config
        cfg = hf.to_dict()
        self.tile = int(hf.tile_size)  # attribute access, as on a PretrainedConfig
        self.mean = np.asarray(cfg["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(cfg["std"], dtype=np.float32)[:, None, None]
        self.cache: dict[str, dict[str, Any]] = {}

    def parse_request(self, request: Any) -> IOProcessorInput:
        if type(request) is dict:
            return ImagePrompt(**request)
        if isinstance(request, IOProcessorRequest):
            if type(request.data) is dict:
                return ImagePrompt(**request.data)
            raise ValueError("Unable to parse the request data")
        raise ValueError("Unable to parse request")

    def pre_process(self, prompt: IOProcessorInput, request_id: str | None = None, **kwargs: Any
                    ) -> PromptType | Sequence[PromptType]:
        if prompt.data_format == "path":
            with rasterio.open(prompt.data) as src:
                bands, meta = src.read().astype(np.float32), src.meta
        else:
            with rasterio.MemoryFile(base64.b64decode(prompt.data)) as mem, mem.open() as src:
                bands, meta = src.read().astype(np.float32), src.meta
        bands = np.where(bands == -9999, 0.0, (bands - self.mean) / self.std)
        h, w = bands.shape[1:]
        t = self.tile
        pad_h, pad_w = (-h) % t, (-w) % t
        bands = np.pad(bands, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
        rows, cols = bands.shape[1] // t, bands.shape[2] // t
        self.cache[request_id or "offline"] = {"meta": meta, "h": h, "w": w, "rows": rows, "cols": cols}
        return [
            {"prompt_token_ids": [1],
             "multi_modal_data": {"pixel_values": torch.from_numpy(
                 np.ascontiguousarray(bands[:, r * t:(r + 1) * t, c * t:(c + 1) * t])).to(torch.float16)}}
            for r in range(rows) for c in range(cols)
        ]

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None,
                     **kwargs: Any) -> IOProcessorOutput:
        state = self.cache.pop(request_id or "offline", None)
        if state is None:
            raise ValueError("No metadata available for the current task")
        t = self.tile
        mask = np.zeros((state["rows"] * t, state["cols"] * t), dtype=np.uint8)
        for i, out in enumerate(model_output):
            r, c = divmod(i, state["cols"])
            mask[r * t:(r + 1) * t, c * t:(c + 1) * t] = out.outputs.data.argmax(dim=0).numpy().astype(np.uint8)
        mask = mask[: state["h"], : state["w"]]
        meta = dict(state["meta"])
        meta.update(count=1, dtype="uint8", compress="lzw", nodata=255)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "prediction.tiff")
            with rasterio.open(path, "w", **meta) as dst:
                dst.write(mask, 1)
            encoded = base64.b64encode(open(path, "rb").read())  # bytes: pydantic coerces to str
        return ImageRequestOutput(type="b64_json", format="tiff", data=encoded, request_id=request_id)

    def output_to_response(self, plugin_output: IOProcessorOutput) -> IOProcessorResponse:
        return IOProcessorResponse(request_id=plugin_output.request_id, data=plugin_output)


def decode_mask(b64: str) -> np.ndarray:
    """Test helper: the class map in a base64 GeoTIFF."""
    with rasterio.MemoryFile(io.BytesIO(base64.b64decode(b64)).read()) as mem, mem.open() as src:
        return src.read(1)
