import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from poolstream.v1 import payload_pb2 as _payload_pb2
from poolstream.v1 import pooling_pb2 as _pooling_pb2
from poolstream.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamDetail(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_DETAIL_UNSPECIFIED: _ClassVar[StreamDetail]
    STREAM_DETAIL_CHUNKS: _ClassVar[StreamDetail]
    STREAM_DETAIL_PROGRESS: _ClassVar[StreamDetail]

class PluginSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLUGIN_SOURCE_UNSPECIFIED: _ClassVar[PluginSource]
    PLUGIN_SOURCE_NONE: _ClassVar[PluginSource]
    PLUGIN_SOURCE_ARGUMENT: _ClassVar[PluginSource]
    PLUGIN_SOURCE_CONFIG_JSON: _ClassVar[PluginSource]
STREAM_DETAIL_UNSPECIFIED: StreamDetail
STREAM_DETAIL_CHUNKS: StreamDetail
STREAM_DETAIL_PROGRESS: StreamDetail
PLUGIN_SOURCE_UNSPECIFIED: PluginSource
PLUGIN_SOURCE_NONE: PluginSource
PLUGIN_SOURCE_ARGUMENT: PluginSource
PLUGIN_SOURCE_CONFIG_JSON: PluginSource

class ProcessRequest(_message.Message):
    __slots__ = ("request_id", "data", "priority", "params")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    data: _payload_pb2.PluginPayload
    priority: int
    params: _pooling_pb2.PoolingParams
    def __init__(self, request_id: _Optional[str] = ..., data: _Optional[_Union[_payload_pb2.PluginPayload, _Mapping]] = ..., priority: _Optional[int] = ..., params: _Optional[_Union[_pooling_pb2.PoolingParams, _Mapping]] = ...) -> None: ...

class ProcessResponse(_message.Message):
    __slots__ = ("request_id", "created_at", "data", "usage")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    created_at: _timestamp_pb2.Timestamp
    data: _payload_pb2.PluginPayload
    usage: Usage
    def __init__(self, request_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Union[_payload_pb2.PluginPayload, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_count", "prompt_tokens")
    PROMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_count: int
    prompt_tokens: int
    def __init__(self, prompt_count: _Optional[int] = ..., prompt_tokens: _Optional[int] = ...) -> None: ...

class ProcessStreamRequest(_message.Message):
    __slots__ = ("request_id", "data", "priority", "params", "detail")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    data: _payload_pb2.PluginPayload
    priority: int
    params: _pooling_pb2.PoolingParams
    detail: StreamDetail
    def __init__(self, request_id: _Optional[str] = ..., data: _Optional[_Union[_payload_pb2.PluginPayload, _Mapping]] = ..., priority: _Optional[int] = ..., params: _Optional[_Union[_pooling_pb2.PoolingParams, _Mapping]] = ..., detail: _Optional[_Union[StreamDetail, str]] = ...) -> None: ...

class ProcessStreamResponse(_message.Message):
    __slots__ = ("chunk", "progress", "result")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    chunk: ProcessChunk
    progress: ProcessProgress
    result: ProcessResponse
    def __init__(self, chunk: _Optional[_Union[ProcessChunk, _Mapping]] = ..., progress: _Optional[_Union[ProcessProgress, _Mapping]] = ..., result: _Optional[_Union[ProcessResponse, _Mapping]] = ...) -> None: ...

class ProcessChunk(_message.Message):
    __slots__ = ("index", "output", "completed", "total")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    index: int
    output: _pooling_pb2.PoolingRequestOutput
    completed: int
    total: int
    def __init__(self, index: _Optional[int] = ..., output: _Optional[_Union[_pooling_pb2.PoolingRequestOutput, _Mapping]] = ..., completed: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ProcessProgress(_message.Message):
    __slots__ = ("completed", "total")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    completed: int
    total: int
    def __init__(self, completed: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("request_id", "prompts", "params", "priority")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompts: _containers.RepeatedCompositeFieldContainer[_pooling_pb2.Prompt]
    params: _pooling_pb2.PoolingParams
    priority: int
    def __init__(self, request_id: _Optional[str] = ..., prompts: _Optional[_Iterable[_Union[_pooling_pb2.Prompt, _Mapping]]] = ..., params: _Optional[_Union[_pooling_pb2.PoolingParams, _Mapping]] = ..., priority: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("index", "output", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    output: _pooling_pb2.PoolingRequestOutput
    error: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., output: _Optional[_Union[_pooling_pb2.PoolingRequestOutput, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class EncodeAllRequest(_message.Message):
    __slots__ = ("request_id", "prompts", "params", "priority")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompts: _containers.RepeatedCompositeFieldContainer[_pooling_pb2.Prompt]
    params: _pooling_pb2.PoolingParams
    priority: int
    def __init__(self, request_id: _Optional[str] = ..., prompts: _Optional[_Iterable[_Union[_pooling_pb2.Prompt, _Mapping]]] = ..., params: _Optional[_Union[_pooling_pb2.PoolingParams, _Mapping]] = ..., priority: _Optional[int] = ...) -> None: ...

class EncodeAllResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EncodeResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[EncodeResponse, _Mapping]]] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("request_id", "query", "documents", "priority", "return_text", "raw_scores", "truncate", "top_n")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RETURN_TEXT_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    return_text: bool
    raw_scores: bool
    truncate: bool
    top_n: int
    def __init__(self, request_id: _Optional[str] = ..., query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., return_text: _Optional[bool] = ..., raw_scores: _Optional[bool] = ..., truncate: _Optional[bool] = ..., top_n: _Optional[int] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "score", "text", "truncated")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    text: str
    truncated: bool
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., text: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("request_id", "results", "usage", "method")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    usage: Usage
    method: str
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., method: _Optional[str] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("model", "plugin", "limits", "versions", "layout")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    plugin: PluginInfo
    limits: Limits
    versions: Versions
    layout: ProcessLayout
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., plugin: _Optional[_Union[PluginInfo, _Mapping]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., versions: _Optional[_Union[Versions, _Mapping]] = ..., layout: _Optional[_Union[ProcessLayout, _Mapping]] = ...) -> None: ...

class ProcessLayout(_message.Message):
    __slots__ = ("engine_process", "api_server_count", "front_end_index", "front_end_pid", "engine_pid")
    ENGINE_PROCESS_FIELD_NUMBER: _ClassVar[int]
    API_SERVER_COUNT_FIELD_NUMBER: _ClassVar[int]
    FRONT_END_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRONT_END_PID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_PID_FIELD_NUMBER: _ClassVar[int]
    engine_process: bool
    api_server_count: int
    front_end_index: int
    front_end_pid: int
    engine_pid: int
    def __init__(self, engine_process: _Optional[bool] = ..., api_server_count: _Optional[int] = ..., front_end_index: _Optional[int] = ..., front_end_pid: _Optional[int] = ..., engine_pid: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "path", "architecture", "output_shape", "output_dtype", "max_model_len", "pooling", "normalize", "device", "compute_dtype", "tensor_inputs", "tasks", "default_task", "labels", "backend", "prompt_names", "default_prompt_name", "text_cut_chars", "text_chars_per_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_INPUTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAMES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    TEXT_CUT_CHARS_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHARS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    architecture: str
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    output_dtype: _tensor_pb2.DType
    max_model_len: int
    pooling: str
    normalize: bool
    device: str
    compute_dtype: _tensor_pb2.DType
    tensor_inputs: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[_pooling_pb2.PoolingTask]
    default_task: _pooling_pb2.PoolingTask
    labels: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    prompt_names: _containers.RepeatedScalarFieldContainer[str]
    default_prompt_name: str
    text_cut_chars: int
    text_chars_per_token: int
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., architecture: _Optional[str] = ..., output_shape: _Optional[_Iterable[int]] = ..., output_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., max_model_len: _Optional[int] = ..., pooling: _Optional[str] = ..., normalize: _Optional[bool] = ..., device: _Optional[str] = ..., compute_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., tensor_inputs: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[_Union[_pooling_pb2.PoolingTask, str]]] = ..., default_task: _Optional[_Union[_pooling_pb2.PoolingTask, str]] = ..., labels: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., prompt_names: _Optional[_Iterable[str]] = ..., default_prompt_name: _Optional[str] = ..., text_cut_chars: _Optional[int] = ..., text_chars_per_token: _Optional[int] = ...) -> None: ...

class PluginInfo(_message.Message):
    __slots__ = ("name", "source", "class_name", "available", "input_types", "output_types", "input_media_types", "details")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    INPUT_MEDIA_TYPES_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: PluginSource
    class_name: str
    available: _containers.RepeatedScalarFieldContainer[str]
    input_types: _containers.RepeatedScalarFieldContainer[str]
    output_types: _containers.RepeatedScalarFieldContainer[str]
    input_media_types: _containers.RepeatedScalarFieldContainer[str]
    details: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., source: _Optional[_Union[PluginSource, str]] = ..., class_name: _Optional[str] = ..., available: _Optional[_Iterable[str]] = ..., input_types: _Optional[_Iterable[str]] = ..., output_types: _Optional[_Iterable[str]] = ..., input_media_types: _Optional[_Iterable[str]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_receive_message_bytes", "max_send_message_bytes", "max_prompts_per_request", "max_queued_prompts", "max_concurrent_calls", "max_payload_bytes", "max_num_batched_tokens", "max_num_seqs", "plugin_timeout", "max_prompt_chars", "max_request_chars", "max_prompt_token_ids", "max_request_token_ids", "max_prompt_tensor_bytes", "max_request_tensor_bytes", "allow_non_finite_inputs", "max_prompt_tensor_cost")
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_BATCHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SEQS_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TENSOR_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_TENSOR_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NON_FINITE_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_TENSOR_COST_FIELD_NUMBER: _ClassVar[int]
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_prompts_per_request: int
    max_queued_prompts: int
    max_concurrent_calls: int
    max_payload_bytes: int
    max_num_batched_tokens: int
    max_num_seqs: int
    plugin_timeout: _duration_pb2.Duration
    max_prompt_chars: int
    max_request_chars: int
    max_prompt_token_ids: int
    max_request_token_ids: int
    max_prompt_tensor_bytes: int
    max_request_tensor_bytes: int
    allow_non_finite_inputs: bool
    max_prompt_tensor_cost: int
    def __init__(self, max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_prompts_per_request: _Optional[int] = ..., max_queued_prompts: _Optional[int] = ..., max_concurrent_calls: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., max_num_batched_tokens: _Optional[int] = ..., max_num_seqs: _Optional[int] = ..., plugin_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_prompt_chars: _Optional[int] = ..., max_request_chars: _Optional[int] = ..., max_prompt_token_ids: _Optional[int] = ..., max_request_token_ids: _Optional[int] = ..., max_prompt_tensor_bytes: _Optional[int] = ..., max_request_tensor_bytes: _Optional[int] = ..., allow_non_finite_inputs: _Optional[bool] = ..., max_prompt_tensor_cost: _Optional[int] = ...) -> None: ...

class Versions(_message.Message):
    __slots__ = ("poolstream", "python", "torch", "grpcio", "protobuf")
    POOLSTREAM_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    TORCH_FIELD_NUMBER: _ClassVar[int]
    GRPCIO_FIELD_NUMBER: _ClassVar[int]
    PROTOBUF_FIELD_NUMBER: _ClassVar[int]
    poolstream: str
    python: str
    torch: str
    grpcio: str
    protobuf: str
    def __init__(self, poolstream: _Optional[str] = ..., python: _Optional[str] = ..., torch: _Optional[str] = ..., grpcio: _Optional[str] = ..., protobuf: _Optional[str] = ...) -> None: ...
