"""poolstream IO Processor plugin ``geotiff_segmentation``.

Segments multispectral GeoTIFFs (land / water / cloud) with a Prithvi-style
model served by poolstream, and returns a GeoTIFF class map with the input's
georeferencing (or a PNG quick look). See README.md.

Entry point (group ``poolstream.io_processor_plugins``)::

    geotiff_segmentation = poolstream_geotiff:register
"""

from __future__ import annotations

__version__ = "0.1.0"


def register() -> str:
    """Entry-point callable: the fully qualified class name of the plugin."""
    return "poolstream_geotiff.processor.GeoTiffSegmentationProcessor"
