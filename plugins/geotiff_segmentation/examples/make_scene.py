#!/usr/bin/env python3
"""Write a synthetic 6-band GeoTIFF scene (and its ground-truth label raster).

    python plugins/geotiff_segmentation/examples/make_scene.py scene.tif --size 2048 --seed 42

The scene is int16 surface reflectance x 10000 (Blue, Green, Red, NIR, SWIR1,
SWIR2), georeferenced in EPSG:32633 (WGS 84 / UTM 33N) at 30 m, nodata
-9999, deflate-compressed. ``--label`` also writes the truth (0 land,
1 water, 2 cloud, 255 nodata) with the same georeferencing.
"""

from __future__ import annotations

import argparse

import numpy as np
from poolstream_geotiff import raster, synthetic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output")
    ap.add_argument("--size", type=int, default=1024, help="width and height in px")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--nodata-edge", action="store_true", help="add a missing-data swath edge")
    ap.add_argument("--label", help="also write the ground-truth class raster here")
    args = ap.parse_args()
    h, w = args.height or args.size, args.size
    scene = synthetic.make_scene(h, w, args.seed, nodata_edge=args.nodata_edge)
    tags = raster.geotiff_georef_tags(32633, (399960.0, 5900040.0), 30.0, citation="WGS 84 / UTM zone 33N")
    raster.write_multiband_geotiff(args.output, scene.bands, tags, nodata=synthetic.NODATA, compression="zlib")
    if args.label:
        raster.write_multiband_geotiff(args.label, scene.label[None], tags, nodata=synthetic.LABEL_NODATA,
                                       compression="zlib")
    counts = np.bincount(scene.label.ravel(), minlength=256)
    print(f"wrote {args.output} ({w} x {h} px): land {counts[0]}, water {counts[1]}, cloud {counts[2]}, "
          f"nodata {counts[255]} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
