"""GetServerInfo: the model, the active plugin, limits and versions."""

from __future__ import annotations

import os
import platform

import google.protobuf
from google.protobuf import duration_pb2
import grpc
import torch

import poolstream
from poolstream.plugins.io_processors import PluginSource
from poolstream.tensors import dtype_to_proto
from poolstream.server.convert import TASK_ENUMS
from poolstream.server.state import ServerState
from poolstream.v1 import pooling_service_pb2 as pb

_SOURCES = {
    PluginSource.NONE: pb.PLUGIN_SOURCE_NONE,
    PluginSource.ARGUMENT: pb.PLUGIN_SOURCE_ARGUMENT,
    PluginSource.CONFIG_JSON: pb.PLUGIN_SOURCE_CONFIG_JSON,
}


def server_info(state: ServerState) -> pb.GetServerInfoResponse:
    config = state.config
    model_config = config.model_config
    model = pb.ModelInfo(name=model_config.name, path=model_config.model, architecture=model_config.architecture)
    if state.engine is not None:
        mi = state.engine.model_info
        model.output_shape.extend(int(s) for s in mi.output_shape)
        model.output_dtype = dtype_to_proto(mi.output_dtype)
        model.max_model_len = int(mi.max_model_len)
        model.pooling = mi.pooling
        model.normalize = bool(mi.normalize)
        model.device = str(mi.device)
        model.compute_dtype = dtype_to_proto(mi.compute_dtype)
        model.tensor_inputs.extend(mi.tensor_inputs)
        # Pooling tasks (models/base.py); engines from before tasks existed serve embed.
        model.tasks.extend(TASK_ENUMS[t] for t in getattr(mi, "tasks", ("embed",)) if t in TASK_ENUMS)
        model.default_task = TASK_ENUMS.get(getattr(mi, "default_task", "embed"), 0)  # type: ignore[arg-type]
        model.labels.extend(getattr(mi, "labels", ()))
        model.backend = getattr(mi, "backend", "native")
        model.prompt_names.extend(getattr(mi, "prompts", {}) or {})
        model.default_prompt_name = getattr(mi, "default_prompt_name", None) or ""
        model.text_cut_chars = int(getattr(mi, "text_cut_chars", 0))
        model.text_chars_per_token = int(getattr(mi, "text_chars_per_token", 0))

    sel = state.selection
    plugin = pb.PluginInfo(name=sel.name or "", source=_SOURCES[sel.source], available=sel.available)
    if sel.processor is not None:
        cls = type(sel.processor)
        plugin.class_name = f"{cls.__module__}.{cls.__qualname__}"
        plugin.input_types.extend(getattr(cls, "input_types", ()))
        plugin.output_types.extend(getattr(cls, "output_types", ()))
        plugin.input_media_types.extend(getattr(cls, "input_media_types", ()))
        describe = getattr(sel.processor, "info", None)  # optional poolstream extension
        details = describe() if callable(describe) else None
        if details:
            plugin.details.update(details)

    limits = config.limits
    engine_config = config.engine_config
    # Filled by the process that starts the layout (server/processes.py); one process otherwise.
    lay = state.layout
    pid = os.getpid()
    layout = pb.ProcessLayout(
        engine_process=bool(lay.get("engine_process", False)),
        api_server_count=int(lay.get("api_server_count", 1)),
        front_end_index=int(lay.get("front_end_index", 0)),
        front_end_pid=pid,
        engine_pid=int(getattr(state.engine, "engine_pid", 0) or pid),
    )
    return pb.GetServerInfoResponse(
        layout=layout,
        model=model,
        plugin=plugin,
        limits=pb.Limits(
            max_receive_message_bytes=limits.max_receive_message_bytes,
            max_send_message_bytes=limits.max_send_message_bytes,
            max_prompts_per_request=limits.max_prompts_per_request,
            max_queued_prompts=engine_config.max_queued_prompts,
            max_concurrent_calls=limits.max_concurrent_calls,
            max_payload_bytes=limits.max_payload_bytes,
            max_num_batched_tokens=engine_config.max_num_batched_tokens,
            max_num_seqs=engine_config.max_num_seqs,
            plugin_timeout=_duration(limits.plugin_timeout_s),
            max_prompt_chars=limits.max_prompt_chars,
            max_request_chars=limits.max_request_chars,
            max_prompt_token_ids=limits.max_prompt_token_ids,
            max_request_token_ids=limits.max_request_token_ids,
            max_prompt_tensor_bytes=limits.max_prompt_tensor_bytes,
            max_request_tensor_bytes=limits.max_request_tensor_bytes,
            max_prompt_tensor_cost=limits.max_prompt_tensor_cost,
            allow_non_finite_inputs=limits.allow_non_finite_inputs,
        ),
        versions=pb.Versions(
            poolstream=poolstream.__version__,
            python=platform.python_version(),
            torch=torch.__version__,
            grpcio=grpc.__version__,
            protobuf=google.protobuf.__version__,
        ),
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(max(seconds, 0) * 1e9))
    return d
