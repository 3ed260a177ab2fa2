"""Bands and units: what the raster holds is read or stated, converted or refused, never silently segmented.

Rasters with band descriptions and scale/offset metadata are written by GDAL
itself (rasterio), as a user's tools would. Conversions are checked by IoU
against the scene's truth (>= 0.95), refusals by their reason and details.
The rules are in the plugin README ("Bands and units").
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import rasterio
from affine import Affine
from poolstream_geotiff import synthetic
from poolstream_geotiff.units import UnitsError

from tests.geotiff import helpers

SIZE = 320
SEED = helpers.TEST_SEED_BASE + 500
PERM = [3, 5, 0, 4, 2, 1]  # raster band i holds model band PERM[i]
S2_NAMES = ["B02", "B03", "B04", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def scene() -> synthetic.Scene:
    return synthetic.make_scene(SIZE, SIZE, SEED)


def gdal_tiff(bands: np.ndarray, *, descriptions: list[str] | None = None, scales: list[float] | None = None,
              offsets: list[float] | None = None, nodata: float | None = None, crs: str = "EPSG:32633") -> bytes:
    """A GeoTIFF written by GDAL (rasterio) from [C, H, W] bands."""
    c, h, w = bands.shape
    mem = io.BytesIO()
    with rasterio.io.MemoryFile() as f:
        with f.open(driver="GTiff", width=w, height=h, count=c, dtype=bands.dtype, crs=crs,
                    transform=Affine(helpers.PIXEL, 0.0, helpers.ORIGIN[0], 0.0, -helpers.PIXEL, helpers.ORIGIN[1]),
                    nodata=nodata, compress="deflate") as dst:
            dst.write(bands)
            for i, d in enumerate(descriptions or []):
                dst.set_band_description(i + 1, d)
            if scales is not None:
                dst.scales = scales
            if offsets is not None:
                dst.offsets = offsets
        mem.write(f.read())
    return mem.getvalue()


def run(processor, model, data: bytes, **fields):
    import asyncio

    payload = {"geotiff": base64.b64encode(data).decode(), **fields}
    return asyncio.run(helpers.run_inprocess(processor, model, payload))


def water_iou(resp: dict, scene: synthetic.Scene) -> float:
    mask = helpers.read_tiff(base64.b64decode(resp["data"]))[0]
    return synthetic.iou(mask, scene.label, synthetic.WATER)


def refusal(processor, model, data: bytes, **fields) -> UnitsError:
    with pytest.raises(UnitsError) as e:
        run(processor, model, data, **fields)
    return e.value


def test_reference_int16_in_the_models_units(processor, model, scene):
    resp = run(processor, model, gdal_tiff(scene.bands, nodata=synthetic.NODATA))
    assert resp["bands_used"] == [0, 1, 2, 3, 4, 5] and resp["input_conversion"] == ""
    assert water_iou(resp, scene) >= 0.95


def test_float_reflectance_0_to_1_is_converted(processor, model, scene):
    refl = (scene.bands.astype(np.float32) / synthetic.SCALE).astype(np.float32)
    refl[scene.bands == synthetic.NODATA] = np.nan
    resp = run(processor, model, gdal_tiff(refl))
    assert "reflectance 0..1" in resp["input_conversion"]
    assert water_iou(resp, scene) >= 0.95


def test_band_descriptions_reorder_the_bands(processor, model, scene):
    shuffled = scene.bands[PERM]
    data = gdal_tiff(shuffled, descriptions=[S2_NAMES[p] for p in PERM], nodata=synthetic.NODATA)
    resp = run(processor, model, data)
    # Model band k comes from the raster band holding it.
    assert resp["bands_used"] == [PERM.index(k) for k in range(6)]
    assert water_iou(resp, scene) >= 0.95


def test_wrong_order_without_descriptions_stated_in_the_request(processor, model, scene):
    data = gdal_tiff(scene.bands[PERM], nodata=synthetic.NODATA)
    by_name = run(processor, model, data, band_names=[synthetic.BAND_NAMES[p] for p in PERM])
    by_index = run(processor, model, data, bands=[PERM.index(k) for k in range(6)])
    for resp in (by_name, by_index):
        assert resp["bands_used"] == [PERM.index(k) for k in range(6)]
        assert water_iou(resp, scene) >= 0.95


def test_band_means_far_from_the_model_in_this_order_are_refused(processor):
    """Rule 6 (a coarse check: it fires only when the means fit another order far better; a
    reversed synthetic scene passes it, so the order must be stated, see the README)."""
    from poolstream_geotiff.units import plan_units

    rng = np.random.default_rng(0)
    mean, std = processor.mean.astype(np.float64), processor.std.astype(np.float64)
    perm = [3, 0, 1, 2, 4, 5]
    # Raster band i holds model band perm[i], with spreads far tighter than the model's std.
    sample = np.stack([rng.normal(mean[k], 50.0, 5000) for k in perm])
    sample[:, :50] = 10.0  # dark pixels: rule 4 passes
    with pytest.raises(UnitsError) as e:
        plan_units(processor.band_specs, list(range(6)), None, None, sample, False, "positional", mean, std)
    assert e.value.reason == "BANDS_OUT_OF_ORDER"
    ordered = np.stack([rng.normal(mean[k], 50.0, 5000) for k in range(6)])
    ordered[:, :50] = 10.0
    plan_units(processor.band_specs, list(range(6)), None, None, ordered, False, "positional", mean, std)


def test_descriptions_that_miss_a_model_band_are_refused(processor, model, scene):
    names = ["B02", "B03", "B04", "B8A", "B11", "cirrus"]
    err = refusal(processor, model, gdal_tiff(scene.bands, descriptions=names, nodata=synthetic.NODATA))
    assert err.reason == "MISSING_BANDS" and "SWIR_2" in err.details["missing"]


def test_sentinel2_offset_is_refused_unless_stated(processor, model, scene):
    dn = scene.bands.astype(np.int32) + 1000
    dn[scene.bands == synthetic.NODATA] = 0
    data = gdal_tiff(dn.astype(np.uint16), nodata=0)
    err = refusal(processor, model, data)
    assert err.reason == "VALUES_LOOK_OFFSET"
    assert "offset -0.1" in str(err) and "seen" in err.details
    # Stated in the request: converted exactly.
    resp = run(processor, model, data, scale=[0.0001], offset=[-0.1])
    assert "stated scale/offset" in resp["input_conversion"]
    assert water_iou(resp, scene) >= 0.95
    # Stated in the file (GDAL scale/offset metadata): the same.
    tagged = gdal_tiff(dn.astype(np.uint16), nodata=0, scales=[0.0001] * 6, offsets=[-0.1] * 6)
    assert water_iou(run(processor, model, tagged), scene) >= 0.95


def test_values_that_cannot_be_reflectance_are_refused(processor, model, scene):
    # Digital numbers on a 0..65535 scale (x 4 the model's units).
    dn = np.clip(scene.bands.astype(np.int64) * 4, 0, 65535).astype(np.uint16)
    err = refusal(processor, model, gdal_tiff(dn))
    assert err.reason == "VALUES_OUT_OF_RANGE"
    assert "-100..16000" in err.details["expected"]


def test_stated_units_still_checked_against_the_valid_range(processor, model, scene):
    refl = (scene.bands.astype(np.float32) / synthetic.SCALE).astype(np.float32)
    refl[scene.bands == synthetic.NODATA] = np.nan
    # Saying the 0..1 floats are already x 10000 puts them all near 0: plausible, so accepted;
    # saying they are x 0.001 puts them far out of range: refused, not segmented.
    err = refusal(processor, model, gdal_tiff(refl), scale=[1000.0])
    assert err.reason == "VALUES_OUT_OF_RANGE"


def test_server_info_lists_bands_and_units(processor):
    info = processor.info()
    names = [b["name"] for b in info["input_bands"]]
    assert names == list(synthetic.BAND_NAMES)
    blue = info["input_bands"][0]
    assert blue["scale"] == 0.0001 and blue["valid_range"] == [-100, 16000] and "B02" in blue["aliases"]
    assert any("reflectance 0..1" in r for r in info["conversion_rules"])
