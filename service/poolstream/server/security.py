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
import ssl
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
    check_tls_files(cert, key, client_ca or None)
    return TLSConfig(cert, key, client_ca or None)


def _no_password() -> bytes:
    raise ValueError("the key is encrypted")


def check_tls_files(cert: str, key: str, client_ca: str | None) -> None:
    """Load the files as gRPC will, so a bad one stops startup with a message naming it
    (gRPC itself only says "Failed to bind", naming neither file)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except ValueError:
        raise ValueError(f"--tls-key {key} is encrypted; gRPC needs an unencrypted PEM key") from None
    except ssl.SSLError as e:
        what = ("the private key does not match the certificate" if "KEY_VALUES_MISMATCH" in str(e)
                else f"cannot load the certificate and key ({e.reason or e})")
        raise ValueError(f"--tls-cert {cert} and --tls-key {key}: {what}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as e:
            raise ValueError(f"--tls-client-ca {client_ca}: not a PEM CA bundle ({e.reason or e})") from None


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
    """Tokens from ``--auth-token-file`` (one per line) or ``$POOLSTREAM_AUTH_TOKEN``; [] = auth off.

    A setting that is present but unusable stops startup (ValueError naming it): a blank
    ``$POOLSTREAM_AUTH_TOKEN`` used to turn authentication off silently, and a token no
    client can send (gRPC metadata is printable ASCII) locked every client out."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as e:
            raise OSError(f"--auth-token-file {token_file}: {e.strerror or e}") from e
        except UnicodeDecodeError:
            raise ValueError(f"--auth-token-file {token_file}: not UTF-8 text; tokens must be printable ASCII") \
                from None
        tokens = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        if not tokens:
            raise ValueError(f"--auth-token-file {token_file} holds no token")
        for n, token in enumerate(tokens, 1):
            _check_token(token, f"--auth-token-file {token_file} (token {n})")
        return tokens
    if AUTH_TOKEN_ENV not in environ:
        return []
    value = environ[AUTH_TOKEN_ENV].strip()
    if not value:
        raise ValueError(
            f"{AUTH_TOKEN_ENV} is set but blank: set it to a token to require one, or unset it "
            "to serve without authentication")
    _check_token(value, AUTH_TOKEN_ENV)
    return [value]


def _check_token(token: str, setting: str) -> None:
    # What a client can put after "Bearer " in gRPC metadata: printable ASCII, no spaces.
    if not all("\x21" <= c <= "\x7e" for c in token):
        raise ValueError(
            f"{setting}: the token has characters other than printable ASCII (or spaces inside); "
            "no client can send it in gRPC metadata")


def auth_source(token_file: str | None) -> str:
    """Where the tokens came from, for the startup log."""
    return f"--auth-token-file {token_file}" if token_file else f"${AUTH_TOKEN_ENV}"


def describe_security(tls: TLSConfig | None, tokens: list[str] | tuple[str, ...], source: str = "") -> str:
    """One line for the startup log: which transport security and authentication are on."""
    if tls is None:
        transport = "plaintext (no TLS)"
    elif tls.mutual:
        transport = f"mutual TLS (--tls-cert {tls.cert_file}, client CA {tls.client_ca_file})"
    else:
        transport = f"TLS (--tls-cert {tls.cert_file})"
    if not tokens:
        auth = "no authentication"
    else:
        auth = f"bearer tokens required on PoolingService ({len(tokens)} from {source or 'the config'})"
    return f"security: {transport}; {auth}"
