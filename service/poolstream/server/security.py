"""Transport security and bearer-token authentication.

TLS (``--tls-cert``, ``--tls-key``) and mutual TLS (``--tls-client-ca``:
clients must present a certificate signed by that CA) use gRPC's own TLS
stack. Bearer tokens (``--auth-token-file`` or the ``POOLSTREAM_AUTH_TOKEN``
environment variable) guard ``poolstream.v1.PoolingService`` only: the health
and reflection services stay open so that probes and ``grpcurl list`` work.
Tokens are compared with ``hmac.compare_digest`` (constant time). A token
file may hold several tokens, one per line (blank lines and ``#`` comments
ignored), so a token can be rotated without downtime.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

AUTH_TOKEN_ENV = "POOLSTREAM_AUTH_TOKEN"


@dataclass(frozen=True)
class TLSConfig:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: mutual TLS, client certificates required

    def server_credentials(self) -> grpc.ServerCredentials:
        cert = _read(self.cert_file, "--tls-cert")
        key = _read(self.key_file, "--tls-key")
        client_ca = _read(self.client_ca_file, "--tls-client-ca") if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


def tls_from_flags(cert: str | None, key: str | None, client_ca: str | None) -> TLSConfig | None:
    """Validate the TLS flag combination; None for plaintext."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key must be given together")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file")
    return TLSConfig(cert, key, client_ca or None)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise OSError(f"{flag} {path}: {e.strerror or e}") from e


class TokenAuthenticator:
    """Checks ``authorization: Bearer <token>`` against the configured tokens."""

    def __init__(self, tokens: list[str]):
        if not tokens:
            raise ValueError("bearer-token authentication needs at least one token")
        self._tokens = [t.encode("utf-8") for t in tokens]

    def check(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        candidate = presented.strip().encode("utf-8", "surrogateescape")
        ok = False
        for token in self._tokens:  # no early exit: the time does not depend on which token matched
            ok |= hmac.compare_digest(candidate, token)
        return ok


def load_tokens(token_file: str | None, env: dict[str, str] | None = None) -> list[str]:
    """Tokens from ``--auth-token-file`` (one per line) or ``$POOLSTREAM_AUTH_TOKEN``; [] = auth off."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as e:
            raise OSError(f"--auth-token-file {token_file}: {e.strerror or e}") from e
        tokens = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if not tokens:
            raise ValueError(f"--auth-token-file {token_file} holds no token")
        return tokens
    value = environ.get(AUTH_TOKEN_ENV, "").strip()
    return [value] if value else []
