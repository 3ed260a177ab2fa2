from poolstream.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbeddingDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_DTYPE_UNSPECIFIED: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_FLOAT32: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_FLOAT16: _ClassVar[EmbeddingDtype]
    EMBEDDING_DTYPE_BINARY: _ClassVar[EmbeddingDtype]
EMBEDDING_DTYPE_UNSPECIFIED: EmbeddingDtype
EMBEDDING_DTYPE_FLOAT32: EmbeddingDtype
EMBEDDING_DTYPE_FLOAT16: EmbeddingDtype
EMBEDDING_DTYPE_BINARY: EmbeddingDtype

class TextEmbeddingRequest(_message.Message):
    __slots__ = ("texts", "normalize", "dimensions", "truncate", "output_dtype", "similarity")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    normalize: bool
    dimensions: int
    truncate: bool
    output_dtype: EmbeddingDtype
    similarity: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., normalize: _Optional[bool] = ..., dimensions: _Optional[int] = ..., truncate: _Optional[bool] = ..., output_dtype: _Optional[_Union[EmbeddingDtype, str]] = ..., similarity: _Optional[bool] = ...) -> None: ...

class TextEmbeddingResponse(_message.Message):
    __slots__ = ("embeddings", "similarity", "token_counts", "truncated")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    embeddings: _tensor_pb2.Tensor
    similarity: _tensor_pb2.Tensor
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, embeddings: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., similarity: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., token_counts: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[bool]] = ...) -> None: ...
