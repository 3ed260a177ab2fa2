from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_GEOTIFF: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG: _ClassVar[OutputFormat]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_UNSPECIFIED: _ClassVar[Compression]
    COMPRESSION_LZW: _ClassVar[Compression]
    COMPRESSION_DEFLATE: _ClassVar[Compression]
    COMPRESSION_NONE: _ClassVar[Compression]
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_GEOTIFF: OutputFormat
OUTPUT_FORMAT_PNG: OutputFormat
COMPRESSION_UNSPECIFIED: Compression
COMPRESSION_LZW: Compression
COMPRESSION_DEFLATE: Compression
COMPRESSION_NONE: Compression

class GeoTiffSegmentationRequest(_message.Message):
    __slots__ = ("geotiff", "path", "url", "bands", "tile_size", "tile_overlap", "output_format", "threshold", "compression", "input_nodata", "band_names", "scale", "offset")
    GEOTIFF_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TILE_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_NODATA_FIELD_NUMBER: _ClassVar[int]
    BAND_NAMES_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    geotiff: bytes
    path: str
    url: str
    bands: _containers.RepeatedScalarFieldContainer[int]
    tile_size: int
    tile_overlap: int
    output_format: OutputFormat
    threshold: float
    compression: Compression
    input_nodata: float
    band_names: _containers.RepeatedScalarFieldContainer[str]
    scale: _containers.RepeatedScalarFieldContainer[float]
    offset: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, geotiff: _Optional[bytes] = ..., path: _Optional[str] = ..., url: _Optional[str] = ..., bands: _Optional[_Iterable[int]] = ..., tile_size: _Optional[int] = ..., tile_overlap: _Optional[int] = ..., output_format: _Optional[_Union[OutputFormat, str]] = ..., threshold: _Optional[float] = ..., compression: _Optional[_Union[Compression, str]] = ..., input_nodata: _Optional[float] = ..., band_names: _Optional[_Iterable[str]] = ..., scale: _Optional[_Iterable[float]] = ..., offset: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassSummary(_message.Message):
    __slots__ = ("value", "name", "pixel_count", "fraction")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIXEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    value: int
    name: str
    pixel_count: int
    fraction: float
    def __init__(self, value: _Optional[int] = ..., name: _Optional[str] = ..., pixel_count: _Optional[int] = ..., fraction: _Optional[float] = ...) -> None: ...

class GeoTiffSegmentationResponse(_message.Message):
    __slots__ = ("data", "media_type", "width", "height", "crs", "geotransform", "nodata_value", "nodata_pixel_count", "classes", "tile_count", "tile_size", "tile_overlap", "bands_used", "input_conversion")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CRS_FIELD_NUMBER: _ClassVar[int]
    GEOTRANSFORM_FIELD_NUMBER: _ClassVar[int]
    NODATA_VALUE_FIELD_NUMBER: _ClassVar[int]
    NODATA_PIXEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    TILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TILE_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    BANDS_USED_FIELD_NUMBER: _ClassVar[int]
    INPUT_CONVERSION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    media_type: str
    width: int
    height: int
    crs: str
    geotransform: _containers.RepeatedScalarFieldContainer[float]
    nodata_value: int
    nodata_pixel_count: int
    classes: _containers.RepeatedCompositeFieldContainer[ClassSummary]
    tile_count: int
    tile_size: int
    tile_overlap: int
    bands_used: _containers.RepeatedScalarFieldContainer[int]
    input_conversion: str
    def __init__(self, data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., crs: _Optional[str] = ..., geotransform: _Optional[_Iterable[float]] = ..., nodata_value: _Optional[int] = ..., nodata_pixel_count: _Optional[int] = ..., classes: _Optional[_Iterable[_Union[ClassSummary, _Mapping]]] = ..., tile_count: _Optional[int] = ..., tile_size: _Optional[int] = ..., tile_overlap: _Optional[int] = ..., bands_used: _Optional[_Iterable[int]] = ..., input_conversion: _Optional[str] = ...) -> None: ...
