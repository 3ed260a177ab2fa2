from poolstream.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Prompt(_message.Message):
    __slots__ = ("text", "token_ids", "multi_modal")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MULTI_MODAL_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: TokenIds
    multi_modal: MultiModalPrompt
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., multi_modal: _Optional[_Union[MultiModalPrompt, _Mapping]] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class MultiModalPrompt(_message.Message):
    __slots__ = ("prompt_token_ids", "multi_modal_data")
    class MultiModalDataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MULTI_MODAL_DATA_FIELD_NUMBER: _ClassVar[int]
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    multi_modal_data: _containers.MessageMap[str, _tensor_pb2.Tensor]
    def __init__(self, prompt_token_ids: _Optional[_Iterable[int]] = ..., multi_modal_data: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ...) -> None: ...

class PoolingParams(_message.Message):
    __slots__ = ("normalize", "dimensions", "truncate", "truncate_prompt_tokens", "output_dtype", "include_float_values")
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FLOAT_VALUES_FIELD_NUMBER: _ClassVar[int]
    normalize: bool
    dimensions: int
    truncate: bool
    truncate_prompt_tokens: int
    output_dtype: _tensor_pb2.DType
    include_float_values: bool
    def __init__(self, normalize: _Optional[bool] = ..., dimensions: _Optional[int] = ..., truncate: _Optional[bool] = ..., truncate_prompt_tokens: _Optional[int] = ..., output_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., include_float_values: _Optional[bool] = ...) -> None: ...

class PoolingOutput(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _tensor_pb2.Tensor
    def __init__(self, data: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class PoolingRequestOutput(_message.Message):
    __slots__ = ("request_id", "outputs", "prompt_token_ids", "num_cached_tokens", "finished", "truncated")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    NUM_CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    outputs: PoolingOutput
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    num_cached_tokens: int
    finished: bool
    truncated: bool
    def __init__(self, request_id: _Optional[str] = ..., outputs: _Optional[_Union[PoolingOutput, _Mapping]] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., num_cached_tokens: _Optional[int] = ..., finished: _Optional[bool] = ..., truncated: _Optional[bool] = ...) -> None: ...
