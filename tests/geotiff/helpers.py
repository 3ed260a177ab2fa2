"""Helpers for the geotiff_segmentation tests: scenes as GeoTIFFs, and a small
in-process driver that runs the plugin against the real model (batched,
outputs delivered in a chosen completion order), as the engine would."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from poolstream.config import ModelConfig, PoolstreamConfig
from poolstream.entrypoints.protocol import IOProcessorRequest
from poolstream.models.prithvi import PrithviSegmentationModel
from poolstream.outputs import PoolingOutput, PoolingRequestOutput
from poolstream_geotiff import raster, synthetic
from poolstream_geotiff.processor import GeoTiffSegmentationProcessor

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "prithvi-water-demo"
# Test scenes use seeds far from training (0..95) and validation (100000..100007).
TEST_SEED_BASE = 7_000_000
EPSG = 32633  # WGS 84 / UTM zone 33N
ORIGIN = (399960.0, 5900040.0)  # a Sentinel-2 tile corner in zone 33N
PIXEL = 30.0  # HLS resolution


def scene_tiff(height: int, width: int, seed: int, *, nodata_edge: bool = False, compression: str | None = "zlib",
               tile: tuple[int, int] | None = None, clouds: bool | None = None) -> tuple[bytes, synthetic.Scene]:
    scene = synthetic.make_scene(height, width, seed, nodata_edge=nodata_edge, clouds=clouds)
    buf = io.BytesIO()
    tags = raster.geotiff_georef_tags(EPSG, ORIGIN, PIXEL, citation="WGS 84 / UTM zone 33N")
    raster.write_multiband_geotiff(buf, scene.bands, tags, nodata=synthetic.NODATA, compression=compression,
                                   tile=tile)
    return buf.getvalue(), scene


def read_tiff(data: bytes) -> tuple[np.ndarray, dict[int, Any]]:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        tags = {t.code: t.value for t in page.tags.values()}
        return page.asarray(), tags


def make_processor(**config: Any) -> GeoTiffSegmentationProcessor:
    return GeoTiffSegmentationProcessor(PoolstreamConfig(ModelConfig.from_dir(MODEL_DIR), **config))


def load_model() -> PrithviSegmentationModel:
    import json

    hf = json.loads((MODEL_DIR / "config.json").read_text())
    return PrithviSegmentationModel.load(MODEL_DIR, hf, torch.device("cpu"), torch.float32)


# One thread runs the model, as the engine's runner does.
_MODEL_THREAD = ThreadPoolExecutor(1, thread_name_prefix="test-model")


def _forward(model: PrithviSegmentationModel, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_tensors(pixel_values=x)


async def model_outputs(model: PrithviSegmentationModel, prompts: Sequence[Any], request_id: str,
                        order: str = "shuffled", batch: int = 16,
                        seed: int = 0) -> AsyncIterator[tuple[int, PoolingRequestOutput]]:
    """Run prompts through the model in batches; yield (index, output) in the chosen completion order."""
    idx = list(range(len(prompts)))
    if order == "shuffled":
        random.Random(seed).shuffle(idx)
    elif order == "reversed":
        idx.reverse()
    for start in range(0, len(idx), batch):
        chunk = idx[start:start + batch]
        x = torch.stack([prompts[i]["multi_modal_data"]["pixel_values"] for i in chunk])
        logits = await asyncio.get_running_loop().run_in_executor(_MODEL_THREAD, _forward, model, x)
        for i, out in zip(chunk, logits):
            yield i, PoolingRequestOutput(request_id=f"{request_id}-{i}", outputs=PoolingOutput(out.clone()),
                                          prompt_token_ids=[1])
            await asyncio.sleep(0)


async def run_inprocess(processor: GeoTiffSegmentationProcessor, model: PrithviSegmentationModel, data: Any,
                        request_id: str = "req", order: str = "shuffled", seed: int = 0) -> Any:
    """parse -> pre_process_async -> model -> post_process_async -> output_to_response."""
    job = processor.parse_request(IOProcessorRequest(data=data, request_id=request_id))
    stream = await processor.pre_process_async(job, request_id=request_id, parsed_request=job)
    prompts = [p async for p in stream]  # windows as they decode (all of them, here)
    assert len(prompts) == len(stream)
    result = await processor.post_process_async(
        model_outputs(model, prompts, request_id, order=order, seed=seed), request_id=request_id, parsed_request=job
    )
    return processor.output_to_response(result).data
