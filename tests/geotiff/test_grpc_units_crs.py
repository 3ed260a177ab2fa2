"""Over gRPC: units refusals carry what was expected and seen; GetServerInfo shows the bands;
a user-defined CRS comes back exact (WKT), checked against GDAL's own reading of the file."""

from __future__ import annotations

import grpc
import numpy as np
import pyproj
import pytest
import rasterio
from grpc_status import rpc_status
from google.protobuf import json_format
from google.rpc import error_details_pb2
from poolstream.payloads.geotiff.v1 import geotiff_segmentation_pb2 as geo
from poolstream.v1 import pooling_service_pb2 as ps
from poolstream_geotiff import synthetic

from tests.geotiff import helpers
from tests.geotiff.test_grpc import process_typed, server, stub  # noqa: F401 - fixtures
from tests.geotiff.test_units import gdal_tiff



@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def scene() -> synthetic.Scene:
    return synthetic.make_scene(256, 256, helpers.TEST_SEED_BASE + 600)


def test_server_info_shows_the_bands_the_model_expects(stub):  # noqa: F811
    info = stub.GetServerInfo(ps.GetServerInfoRequest())
    details = json_format.MessageToDict(info.plugin.details)
    assert [b["name"] for b in details["input_bands"]] == list(synthetic.BAND_NAMES)
    assert details["input_bands"][3]["units"] == "surface reflectance"
    assert details["input_bands"][3]["valid_range"] == [-100, 16000]
    assert details["conversion_rules"]


def test_offset_raster_refused_with_expected_and_seen(stub, scene):  # noqa: F811
    dn = (scene.bands.astype(np.int32) + 1000).astype(np.uint16)
    req = geo.GeoTiffSegmentationRequest(geotiff=gdal_tiff(dn))
    with pytest.raises(grpc.RpcError) as e:
        process_typed(stub, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(e.value)
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.reason == "VALUES_LOOK_OFFSET" and info.domain == "poolstream.dev"
    assert "expected" in info.metadata and "seen" in info.metadata
    # Stated: converted, and the response says so.
    req.scale.append(0.0001)
    req.offset.append(-0.1)
    resp = process_typed(stub, req)
    assert "stated scale/offset" in resp.input_conversion and list(resp.bands_used) == [0, 1, 2, 3, 4, 5]
    mask = helpers.read_tiff(resp.data)[0]
    assert synthetic.iou(mask, scene.label, synthetic.WATER) >= 0.95


CUSTOM_CRS = [
    "+proj=laea +lat_0=45 +lon_0=-100 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs",
    "+proj=tmerc +lat_0=0 +lon_0=15.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m +no_defs",
    "+proj=aea +lat_0=23 +lon_0=-96 +lat_1=29.5 +lat_2=45.5 +x_0=0 +y_0=0 +datum=NAD83 +units=us-ft +no_defs",
    "+proj=lcc +lat_0=46.5 +lon_0=3 +lat_1=49 +lat_2=44 +x_0=700000 +y_0=6600000 +ellps=intl +units=m +no_defs",
    "+proj=stere +lat_0=90 +lat_ts=71 +lon_0=-33 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs",
]


@pytest.mark.parametrize("proj4", CUSTOM_CRS)
def test_user_defined_crs_comes_back_exact(stub, scene, proj4):  # noqa: F811
    data = gdal_tiff(scene.bands, nodata=synthetic.NODATA, crs=rasterio.crs.CRS.from_proj4(proj4))
    with rasterio.io.MemoryFile(data) as f, f.open() as src:
        gdal_crs = pyproj.CRS.from_wkt(src.crs.to_wkt())  # GDAL's reading of the file's GeoKeys
    assert gdal_crs.to_epsg() is None
    resp = process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=data, output_format=geo.OUTPUT_FORMAT_PNG))
    assert resp.crs.startswith(("PROJCRS", "GEOGCRS")), resp.crs[:80]
    ours = pyproj.CRS.from_wkt(resp.crs)
    assert ours.equals(gdal_crs, ignore_axis_order=True), f"\n{ours.to_proj4()}\n{gdal_crs.to_proj4()}"


def test_epsg_crs_stays_a_code(stub, scene):  # noqa: F811
    resp = process_typed(stub, geo.GeoTiffSegmentationRequest(geotiff=gdal_tiff(scene.bands, crs="EPSG:32633"),
                                                              output_format=geo.OUTPUT_FORMAT_PNG))
    assert resp.crs == "EPSG:32633"
