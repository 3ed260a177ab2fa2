"""Transport settings: keepalive, connection age, TLS, auth, metrics and health ports.

Keepalive and ``max_connection_age`` matter behind load balancers: gRPC
connections are long-lived, so without a maximum age a client that connected
before a scale-up never reaches the new replicas. When a connection reaches
``max_connection_age`` (gRPC adds +-10% jitter) the server sends GOAWAY;
calls in flight get ``max_connection_age_grace`` to finish and the client
reconnects, re-resolving (headless Service DNS) or re-balancing (L4/L7 LB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poolstream.config import LimitsConfig
from poolstream.server.security import TLSConfig


@dataclass(frozen=True)
class TransportConfig:
    # Server -> client HTTP/2 pings on idle connections, to find dead peers (gRPC's default is 2 h).
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Clients may ping this often (their keepalive); faster pings get GOAWAY "too_many_pings".
    keepalive_min_client_interval_s: float = 10.0
    # 0 = connections live forever (gRPC's default).
    max_connection_age_s: float = 0.0
    max_connection_age_grace_s: float = 30.0
    tls: TLSConfig | None = None
    auth_tokens: tuple[str, ...] = ()
    auth_source: str = ""  # where the tokens came from (the startup log names it)
    metrics_port: int = 0  # 0 = off
    metrics_host: str | None = None  # None = the gRPC --host
    health_port: int = 0  # 0 = off; a plaintext health-only listener (for kubelet probes under TLS)
    access_log: bool = True


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(limits: LimitsConfig, transport: TransportConfig) -> list[tuple[str, Any]]:
    """grpc.aio.server options for the main listener."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", limits.max_receive_message_bytes),
        ("grpc.max_send_message_length", limits.max_send_message_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", _ms(transport.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", _ms(transport.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", _ms(transport.keepalive_min_client_interval_s)),
        # Keep pinging idle connections (gRPC stops after 2 pings without data by default), so a
        # vanished client is noticed within keepalive_time + keepalive_timeout.
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if transport.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", _ms(transport.max_connection_age_s)))
        options.append(("grpc.max_connection_age_grace_ms", _ms(transport.max_connection_age_grace_s)))
    return options


def validate(transport: TransportConfig) -> None:
    """Reject nonsensical combinations at startup (ValueError -> exit 1 with a message)."""
    if transport.keepalive_time_s <= 0 or transport.keepalive_timeout_s <= 0:
        raise ValueError("--keepalive-time and --keepalive-timeout must be positive")
    if transport.max_connection_age_s < 0 or transport.max_connection_age_grace_s < 0:
        raise ValueError("--max-connection-age and --max-connection-age-grace must be >= 0")
    if not 0 <= transport.metrics_port <= 65535 or not 0 <= transport.health_port <= 65535:
        raise ValueError("--metrics-port and --health-port must be 0 (off) or a TCP port")
