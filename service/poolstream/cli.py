"""``poolstream serve``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from poolstream.env_flags import apply_env_defaults
from poolstream.config import EngineConfig, LimitsConfig, ModelConfig, PoolstreamConfig, embedded_model_config
from poolstream.server.observability import configure_logging
from poolstream.server.security import AUTH_TOKEN_ENV, auth_source, load_tokens, tls_from_flags
from poolstream.server.transport import TransportConfig
from poolstream.server.transport import validate as validate_transport


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    d_engine, d_limits = EngineConfig(), LimitsConfig()
    g = p.add_argument_group("model and plugin")
    g.add_argument("--model", help="Hugging Face-style model directory, or a Hugging Face repo id (ORG/NAME) "
                   "found in the local Hugging Face cache (HF_HUB_CACHE / HF_HOME) (default: the embedded "
                   "all-MiniLM-L6-v2)")
    g.add_argument("--allow-download", action="store_true",
                   help="let --model ORG/NAME download from the Hugging Face hub when it is not cached "
                   "(default: the cache only)")
    g.add_argument("--revision", default=None, help="--model ORG/NAME: branch, tag or commit (default: main)")
    g.add_argument(
        "--io-processor-plugin",
        help="IO Processor plugin to use; overrides config.json's io_processor_plugin "
        "(default with no --model: text_embedding)",
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d_engine.device)
    g.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default=d_engine.dtype,
                   help="auto: float16 on CUDA, float32 on CPU")
    g.add_argument("--num-threads", type=int, default=d_engine.num_threads,
                   help="torch intra-op threads of the engine (0: one per core, capped by the CPU "
                   "affinity and a cgroup CPU quota); other threads use one")
    g.add_argument("--model-backend", choices=["auto", "native", "transformers"], default=d_engine.model_backend,
                   help="auto: poolstream's native implementation when it has one, else transformers "
                   "(needs poolstream[transformers]; slower); transformers: always")
    g.add_argument("--no-cpu-side-lane", dest="cpu_side_lane", action="store_false",
                   help="CPU: never run a second batch beside the core thread's under load")
    g.add_argument("--allowed-local-media-path", default=None,
                   help="directory under which plugins may read server-side files (default: none)")
    g.add_argument("--allow-url-fetch", action="store_true", help="let plugins fetch URLs (default: off)")

    g = p.add_argument_group("listening")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=50051, help="0 picks a free port (see --port-file)")
    g.add_argument("--port-file", help="write the bound port here once SERVING")
    g.add_argument("--grace-period", type=float, default=30.0, help="seconds in-flight calls get on shutdown")
    g.add_argument("--drain-delay", type=float, default=0.0,
                   help="seconds to stay up NOT_SERVING on SIGTERM before refusing calls")
    d_transport = TransportConfig()
    g.add_argument("--keepalive-time", type=float, default=d_transport.keepalive_time_s,
                   help="seconds between server keepalive pings on a connection (grpc.keepalive_time_ms)")
    g.add_argument("--keepalive-timeout", type=float, default=d_transport.keepalive_timeout_s,
                   help="seconds to wait for a ping ack before closing the connection")
    g.add_argument("--keepalive-min-client-interval", type=float,
                   default=d_transport.keepalive_min_client_interval_s,
                   help="shortest client ping interval accepted (faster: GOAWAY too_many_pings)")
    g.add_argument("--max-connection-age", type=float, default=d_transport.max_connection_age_s,
                   help="seconds after which a connection gets GOAWAY so clients reconnect and "
                   "rebalance (0: never; gRPC adds +-10%% jitter)")
    g.add_argument("--max-connection-age-grace", type=float, default=d_transport.max_connection_age_grace_s,
                   help="seconds calls in flight get after a max-age GOAWAY")
    g.add_argument("--api-server-count", type=int, default=None,
                   help="N >= 1: N gRPC front-end processes share the port and one engine process owns "
                   "the model (tokenization and plugin hooks scale with N); 0: one process. Default: "
                   "0 on CPU, min(4, cores/4) on CUDA (README, 'Process layout')")
    g.add_argument("--health-port", type=int, default=0,
                   help="also serve grpc.health.v1 alone, in plaintext, on this port (kubelet gRPC "
                   "probes cannot speak TLS); 0: off")

    g = p.add_argument_group("HTTP/JSON front door")
    g.add_argument("--http-port", type=int, default=None,
                   help="also serve HTTP/JSON on this port: OpenAI /v1/embeddings, vLLM /pooling, TEI routes, "
                   "the page at / and OpenAPI docs at /docs (0 picks a free port; default: off)")
    g.add_argument("--http-host", default=None, help="address for --http-port (default: --host)")
    g.add_argument("--http-port-file", help="write the bound HTTP port here once SERVING")

    g = p.add_argument_group("security")
    g.add_argument("--tls-cert", help="PEM certificate chain: serve TLS instead of plaintext")
    g.add_argument("--tls-key", help="PEM private key of --tls-cert")
    g.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mutual TLS)")
    g.add_argument("--auth-token-file",
                   help=f"file of bearer tokens (one per line) required on PoolingService calls; "
                   f"default: ${AUTH_TOKEN_ENV} if set, else no token is required")

    g = p.add_argument_group("observability")
    g.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port (0: off)")
    g.add_argument("--metrics-host", default=None, help="address for --metrics-port (default: --host)")
    g.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="json: one object per line with request_id, trace_id, span_id")
    g.add_argument("--no-access-log", dest="access_log", action="store_false",
                   help="do not log one line per PoolingService call")

    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-num-batched-tokens", type=int, default=d_engine.max_num_batched_tokens)
    g.add_argument("--max-num-seqs", type=int, default=d_engine.max_num_seqs)
    g.add_argument("--max-queued-prompts", type=int, default=d_engine.max_queued_prompts)
    g.add_argument("--max-prompts-per-request", type=int, default=d_limits.max_prompts_per_request)
    g.add_argument("--max-concurrent-calls", type=int, default=d_limits.max_concurrent_calls)
    g.add_argument("--max-payload-bytes", type=int, default=d_limits.max_payload_bytes)
    g.add_argument("--max-receive-message-bytes", type=int, default=d_limits.max_receive_message_bytes)
    g.add_argument("--max-send-message-bytes", type=int, default=d_limits.max_send_message_bytes)
    g.add_argument("--plugin-timeout", type=float, default=d_limits.plugin_timeout_s,
                   help="seconds a plugin may hold a request up without progress (its hooks running, or "
                   "engine outputs waiting for it); then DEADLINE_EXCEEDED PLUGIN_TIMEOUT (0: off; "
                   "engine time never counts)")
    g.add_argument("--max-prompt-chars", type=int, default=d_limits.max_prompt_chars,
                   help="characters of one text prompt (texts are also cut to what the model can use "
                   "before tokenizing: GetServerInfo's text_cut_chars)")
    g.add_argument("--max-request-chars", type=int, default=d_limits.max_request_chars,
                   help="characters of text over all of one request's prompts")
    g.add_argument("--max-prompt-token-ids", type=int, default=d_limits.max_prompt_token_ids,
                   help="token ids of one prompt")
    g.add_argument("--max-request-token-ids", type=int, default=d_limits.max_request_token_ids,
                   help="token ids over all of one request's prompts")
    g.add_argument("--max-prompt-tensor-bytes", type=int, default=d_limits.max_prompt_tensor_bytes,
                   help="bytes of one prompt's tensors (its model cost is also capped at "
                   "--max-num-batched-tokens)")
    g.add_argument("--max-prompt-tensor-cost", type=int, default=d_limits.max_prompt_tensor_cost,
                   help="model cost of one tensor prompt (the model's tensor_prompt_cost, in "
                   "--max-num-batched-tokens units; Prithvi: one per 8x8 pixels)")
    g.add_argument("--max-request-tensor-bytes", type=int, default=d_limits.max_request_tensor_bytes,
                   help="bytes of tensors over all of one request's prompts")
    g.add_argument("--allow-non-finite-inputs", action="store_true",
                   help="accept NaN and +/-Infinity in input tensors and JSON payloads (default: "
                   "INVALID_ARGUMENT NON_FINITE_INPUT)")
    p.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> tuple[PoolstreamConfig, str | None]:
    """Build the config; returns it with the plugin name from the argument (or None)."""
    plugin = args.io_processor_plugin or None
    if args.model is None:
        model_config = embedded_model_config(plugin)
    else:
        model_config = ModelConfig.resolve(args.model, io_processor_plugin=plugin,
                                           allow_download=args.allow_download, revision=args.revision)
    config = PoolstreamConfig(
        model_config=model_config,
        engine_config=EngineConfig(
            device=args.device,
            dtype=args.dtype,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_num_seqs=args.max_num_seqs,
            max_queued_prompts=args.max_queued_prompts,
            num_threads=args.num_threads,
            cpu_side_lane=args.cpu_side_lane,
            model_backend=args.model_backend,
        ),
        limits=LimitsConfig(
            max_receive_message_bytes=args.max_receive_message_bytes,
            max_send_message_bytes=args.max_send_message_bytes,
            max_prompts_per_request=args.max_prompts_per_request,
            max_concurrent_calls=args.max_concurrent_calls,
            max_payload_bytes=args.max_payload_bytes,
            plugin_timeout_s=args.plugin_timeout,
            max_prompt_chars=args.max_prompt_chars,
            max_request_chars=args.max_request_chars,
            max_prompt_token_ids=args.max_prompt_token_ids,
            max_request_token_ids=args.max_request_token_ids,
            max_prompt_tensor_bytes=args.max_prompt_tensor_bytes,
            max_request_tensor_bytes=args.max_request_tensor_bytes,
            max_prompt_tensor_cost=args.max_prompt_tensor_cost,
            allow_non_finite_inputs=args.allow_non_finite_inputs,
        ),
        allowed_local_media_path=args.allowed_local_media_path,
        allow_url_fetch=args.allow_url_fetch,
    )
    return config, plugin


def transport_from_args(args: argparse.Namespace) -> TransportConfig:
    """Keepalive, TLS, auth, metrics and health-port flags (raises ValueError/OSError on bad ones)."""
    transport = TransportConfig(
        keepalive_time_s=args.keepalive_time,
        keepalive_timeout_s=args.keepalive_timeout,
        keepalive_min_client_interval_s=args.keepalive_min_client_interval,
        max_connection_age_s=args.max_connection_age,
        max_connection_age_grace_s=args.max_connection_age_grace,
        tls=tls_from_flags(args.tls_cert, args.tls_key, args.tls_client_ca),
        auth_tokens=tuple(load_tokens(args.auth_token_file)),
        auth_source=auth_source(args.auth_token_file),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        health_port=args.health_port,
        access_log=args.access_log,
    )
    validate_transport(transport)
    return transport


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="poolstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="serve a pooling model over gRPC")
    _add_serve_args(serve_p)
    apply_env_defaults(serve_p)  # every flag also from POOLSTREAM_<FLAG> (the flag wins)
    args = parser.parse_args(argv)

    configure_logging(args.log_level, args.log_format)
    from poolstream.server.app import ListenConfig, serve

    try:
        config, plugin = config_from_args(args)
        listen = ListenConfig(
            host=args.host,
            port=args.port,
            port_file=args.port_file,
            grace_period_s=args.grace_period,
            drain_delay_s=args.drain_delay,
            transport=transport_from_args(args),
            http_port=args.http_port,
            http_host=args.http_host,
            http_port_file=args.http_port_file,
        )
        if args.http_port is not None and not 0 <= args.http_port <= 65535:
            raise ValueError("--http-port must be a TCP port (0 picks a free one)")
        count = args.api_server_count
        if count is None:
            from poolstream.server.processes import default_api_server_count

            count = default_api_server_count(config.engine_config.device)
        if count < 0:
            raise ValueError(f"--api-server-count must be >= 0, got {count}")
        if count > 0:
            from poolstream.server.processes import run_multiprocess

            return run_multiprocess(config, listen, plugin, count, args.log_level, args.log_format)
        return asyncio.run(serve(config, listen, plugin))
    except (ValueError, FileNotFoundError, OSError) as e:
        # Startup errors (plugin selection, bad model dir, bind): message and non-zero exit.
        logging.getLogger("poolstream").error("%s", e)
        print(f"poolstream: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
