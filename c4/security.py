"""Client side of transport security: TLS/mTLS channels to a collector and the bearer token on every call.

Policy (see README "Security"): a loopback collector address may be reached in plaintext when
nothing is configured (with a warning), any other address uses TLS unless ``insecure = true``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("c4.security")

#: Environment variable naming a config file for clients started without --config (UI, one-shot pushes).
CONFIG_ENV = "C4_CONFIG"
#: gRPC metadata key carrying ``Bearer <token>``.
AUTH_METADATA_KEY = "authorization"


class SecurityError(ValueError):
    """A certificate, key or token file is missing, unreadable or malformed; the message names it."""


def host_of(address: str) -> str:
    """The host part of HOST:PORT (brackets of an IPv6 literal removed)."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]")


def is_loopback(address: str) -> bool:
    """True when HOST:PORT names this machine only: localhost, 127.0.0.0/8 or ::1."""
    host = host_of(address).lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_file(path: Path | str, what: str) -> bytes:
    """Read a certificate/key/token file; raise SecurityError naming ``what`` and the path."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SecurityError(f"{what}: file {p} not found") from None
    except OSError as exc:
        raise SecurityError(f"{what}: cannot read {p}: {exc.strerror or exc}") from None
    if not data.strip():
        raise SecurityError(f"{what}: file {p} is empty")
    return data


def read_pem(path: Path | str, what: str) -> bytes:
    """Read a PEM file and check it holds a PEM block."""
    data = read_file(path, what)
    if b"-----BEGIN " not in data:
        raise SecurityError(f"{what}: {path} is not a PEM file (no -----BEGIN line)")
    return data


def read_token(path: Path | str) -> str:
    """The bearer token in a file (first non-empty line, whitespace stripped)."""
    text = read_file(path, "token_file").decode("utf-8", "replace")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            token = line.strip()
            if any(c.isspace() for c in token):
                raise SecurityError(f"token_file: {path}: the token must not contain spaces")
            return token
    raise SecurityError(f"token_file: {path} holds no token")


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel options sized for our batches."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.keepalive_time_ms", 20000),
        ("grpc.keepalive_timeout_ms", 10000),
    ]


@dataclass(frozen=True)
class ClientSecurity:
    """How a client (agent, ``c4 sql``, UI) reaches a collector: TLS files, token, explicit plaintext."""

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""
    token_file: str = ""
    insecure: bool = False

    @classmethod
    def from_config(cls, cfg: object) -> ClientSecurity:
        """Pick the security keys off an AgentConfig or QueryConfig."""
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})

    @classmethod
    def from_env(cls, section: str, config_path: str | None = None) -> ClientSecurity:
        """From a config section ("agent" or "query") of ``config_path`` or $C4_CONFIG, plus C4_* variables."""

        from c4.config import load_config  # lazy: pydantic (the collector's section) stays out of the agent

        cfg = load_config(config_path or os.environ.get(CONFIG_ENV) or None)
        return cls.from_config(getattr(cfg, section))

    def uses_tls(self, address: str) -> bool:
        """TLS unless asked for plaintext, or a loopback address with no TLS key configured."""
        if self.tls_ca or self.tls_cert or self.tls_key or self.tls_server_name:
            return True
        return not (self.insecure or is_loopback(address))

    def check(self) -> None:
        """Validate the files now (at start), so a typo fails fast with the key named."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SecurityError("tls_cert and tls_key go together (client certificate for mutual TLS)")
        if self.tls_ca:
            read_pem(self.tls_ca, "tls_ca")
        if self.tls_cert:
            read_pem(self.tls_cert, "tls_cert")
            read_pem(self.tls_key, "tls_key")
        if self.token_file:
            read_token(self.token_file)

    def describe(self, address: str) -> str:
        """One line for the log: transport and authentication to ``address``."""
        if self.uses_tls(address):
            kind = "mTLS" if self.tls_cert else "TLS"
            ca = self.tls_ca or "system roots"
            transport = f"{kind} (CA {ca})"
        else:
            transport = "plaintext"
        return f"collector={address} transport={transport} token={'yes' if self.token_file else 'no'}"

    def warn_if_plaintext(self, address: str, who: str) -> None:
        """Log when the channel would be plaintext: a warning off loopback, a note on loopback."""
        if not self.uses_tls(address):
            local = is_loopback(address)
            why = "loopback address and no TLS configured" if local else "insecure = true"
            log.log(
                logging.INFO if local else logging.WARNING,
                "%s talks to the collector in plaintext collector=%s reason=%s",
                who,
                address,
                why,
            )

    def _credentials(
        self, address: str, options: Sequence[tuple[str, object]]
    ) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, object]]]:
        """The TLS credentials (None: plaintext) and the channel options with the server name override."""
        opts = list(options)
        if not self.uses_tls(address):
            return None, opts
        creds = grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.tls_ca, "tls_ca") if self.tls_ca else None,
            private_key=read_pem(self.tls_key, "tls_key") if self.tls_key else None,
            certificate_chain=read_pem(self.tls_cert, "tls_cert") if self.tls_cert else None,
        )
        if self.tls_server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return creds, opts

    def channel(self, address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        """A (secure or plaintext) channel that sends the bearer token on every call."""
        creds, opts = self._credentials(address, options)
        if creds is not None:
            channel = grpc.secure_channel(address, creds, options=opts)
        else:
            channel = grpc.insecure_channel(address, options=opts)
        if self.token_file:
            channel = grpc.intercept_channel(channel, BearerToken(read_token(self.token_file)))
        return channel

    def aio_channel(
        self, address: str, options: Sequence[tuple[str, object]] = ()
    ) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
        """As ``channel``, for grpc.aio: the channel and the metadata every call on it must carry (the bearer
        token, read now)."""
        creds, opts = self._credentials(address, options)
        if creds is not None:
            channel = grpc.aio.secure_channel(address, creds, options=opts)
        else:
            channel = grpc.aio.insecure_channel(address, options=opts)
        token = ((AUTH_METADATA_KEY, f"Bearer {read_token(self.token_file)}"),) if self.token_file else ()
        return channel, token


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = (AUTH_METADATA_KEY, f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details, [*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation, client_call_details, request):
        """Unary call with the token."""
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        """Server-streaming call with the token."""
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        """Client-streaming call with the token."""
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        """Bidirectional call with the token."""
        return continuation(self._details(client_call_details), request_iterator)
