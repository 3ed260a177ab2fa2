from poolstream.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PoolingTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_TASK_UNSPECIFIED: _ClassVar[PoolingTask]
    POOLING_TASK_EMBED: _ClassVar[PoolingTask]
    POOLING_TASK_CLASSIFY: _ClassVar[PoolingTask]
    POOLING_TASK_SCORE: _ClassVar[PoolingTask]
    POOLING_TASK_TOKEN_EMBED: _ClassVar[PoolingTask]
    POOLING_TASK_TOKEN_CLASSIFY: _ClassVar[PoolingTask]
    POOLING_TASK_EMBED_SPARSE: _ClassVar[PoolingTask]
POOLING_TASK_UNSPECIFIED: PoolingTask
POOLING_TASK_EMBED: PoolingTask
POOLING_TASK_CLASSIFY: PoolingTask
POOLING_TASK_SCORE: PoolingTask
POOLING_TASK_TOKEN_EMBED: PoolingTask
POOLING_TASK_TOKEN_CLASSIFY: PoolingTask
POOLING_TASK_EMBED_SPARSE: PoolingTask

class Prompt(_message.Message):
    __slots__ = ("text", "token_ids", "multi_modal", "text_pair")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MULTI_MODAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: TokenIds
    multi_modal: MultiModalPrompt
    text_pair: TextPair
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., multi_modal: _Optional[_Union[MultiModalPrompt, _Mapping]] = ..., text_pair: _Optional[_Union[TextPair, _Mapping]] = ...) -> None: ...

class TextPair(_message.Message):
    __slots__ = ("text", "text_pair")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_NUMBER: _ClassVar[int]
    text: str
    text_pair: str
    def __init__(self, text: _Optional[str] = ..., text_pair: _Optional[str] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids", "token_type_ids")
    IDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    token_type_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., token_type_ids: _Optional[_Iterable[int]] = ...) -> None: ...

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
    __slots__ = ("normalize", "dimensions", "truncate", "truncate_prompt_tokens", "output_dtype", "include_float_values", "task", "use_activation", "prompt_name", "sparse_top_k")
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FLOAT_VALUES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    USE_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    SPARSE_TOP_K_FIELD_NUMBER: _ClassVar[int]
    normalize: bool
    dimensions: int
    truncate: bool
    truncate_prompt_tokens: int
    output_dtype: _tensor_pb2.DType
    include_float_values: bool
    task: PoolingTask
    use_activation: bool
    prompt_name: str
    sparse_top_k: int
    def __init__(self, normalize: _Optional[bool] = ..., dimensions: _Optional[int] = ..., truncate: _Optional[bool] = ..., truncate_prompt_tokens: _Optional[int] = ..., output_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., include_float_values: _Optional[bool] = ..., task: _Optional[_Union[PoolingTask, str]] = ..., use_activation: _Optional[bool] = ..., prompt_name: _Optional[str] = ..., sparse_top_k: _Optional[int] = ...) -> None: ...

class PoolingOutput(_message.Message):
    __slots__ = ("data", "labels", "indices", "tokens")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    data: _tensor_pb2.Tensor
    labels: _containers.RepeatedScalarFieldContainer[str]
    indices: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, data: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., indices: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[str]] = ...) -> None: ...

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
