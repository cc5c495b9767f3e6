"""Collector side of security: the tokens file, bearer-token checks per RPC, and TLS server credentials.

Tokens file, one token a line (``#`` starts a comment)::

    <token>  agent   gpu-node-017   # may Hello/Push/PushBundle as agent_id gpu-node-017 only
    <token>  agent   *              # may Push as any agent_id (one token for a whole DaemonSet)
    <token>  reader  grafana        # may Query and read Stats
    <token>  reader,operator  ops   # may also acknowledge/resolve faults (UpdateFault)

A missing or unknown token is refused with UNAUTHENTICATED, a known token without the role
(or pushing as another agent) with PERMISSION_DENIED; both are counted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from c4.security import AUTH_METADATA_KEY, SecurityError, is_loopback, read_file, read_pem

log = logging.getLogger("c4.collector.auth")

ROLES = {"agent", "reader", "operator"}
#: RPC method name -> role it needs.
RPC_ROLES = {
    "Hello": "agent",
    "Push": "agent",
    "PushBundle": "agent",
    "Query": "reader",
    "Stats": "reader",
    "UpdateFault": "operator",
}
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: a name (agent id, ``*`` for any agent, or a reader's name) and roles."""

    name: str
    roles: frozenset[str]

    def may_push_as(self, agent_id: str) -> bool:
        """Whether this identity may send batches for ``agent_id``."""
        return "agent" in self.roles and self.name in ("*", agent_id)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Tokens from a file, kept as SHA-256 digests and compared in constant time."""

    def __init__(self, entries: dict[bytes, Identity]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: Path | str) -> TokenTable:
        """Parse a tokens file; raise SecurityError naming the line that is wrong."""
        text = read_file(path, "tokens_file").decode("utf-8", "replace")
        entries: dict[bytes, Identity] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3:
                raise SecurityError(
                    f"tokens_file {path} line {n}: expected 'TOKEN ROLES NAME', got {len(parts)} fields"
                )
            token, roles_s, name = parts
            roles = frozenset(r for r in roles_s.split(",") if r)
            if not roles or roles - ROLES:
                raise SecurityError(
                    f"tokens_file {path} line {n}: roles must be agent, reader and/or operator, got {roles_s!r}"
                )
            if len(token) < MIN_TOKEN_CHARS:
                raise SecurityError(
                    f"tokens_file {path} line {n}: token shorter than {MIN_TOKEN_CHARS} characters"
                )
            d = _digest(token)
            if d in entries:
                raise SecurityError(f"tokens_file {path} line {n}: duplicate token")
            entries[d] = Identity(name, roles)
        if not entries:
            raise SecurityError(f"tokens_file {path} holds no token")
        return cls(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Identity | None:
        """The identity of a token, or None."""
        d = _digest(token)
        for known, ident in self._entries.items():
            if hmac.compare_digest(known, d):
                return ident
        return None


def bearer_token(metadata) -> str:
    """The token of an ``authorization: Bearer ...`` header ('' when absent or malformed)."""
    for key, value in metadata or ():
        if key.lower() == AUTH_METADATA_KEY and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


class AuthError(Exception):
    """A refused call: the gRPC status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Authenticator:
    """Checks each RPC's bearer token against the tokens file (no tokens file: everyone allowed)."""

    def __init__(self, tokens: TokenTable | None, count) -> None:
        self.tokens = tokens
        self._count = count  # count(name) adds one to a collector counter

    @property
    def enabled(self) -> bool:
        """Whether tokens are checked at all."""
        return self.tokens is not None

    def identify(self, rpc: str, metadata) -> Identity | None:
        """The caller's identity for ``rpc``; raise AuthError (counted) if refused. None when disabled."""
        if self.tokens is None:
            return None
        token = bearer_token(metadata)
        if not token:
            raise self._refuse(rpc, grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        ident = self.tokens.lookup(token)
        if ident is None:
            raise self._refuse(rpc, grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")
        role = RPC_ROLES[rpc]
        if role not in ident.roles:
            raise self._refuse(
                rpc, grpc.StatusCode.PERMISSION_DENIED, f"token of {ident.name!r} lacks the {role} role"
            )
        return ident

    def check_agent(self, rpc: str, ident: Identity | None, agent_id: str) -> None:
        """Refuse (counted) when the token may not speak for ``agent_id``."""
        if ident is not None and not ident.may_push_as(agent_id):
            raise self._refuse(
                rpc,
                grpc.StatusCode.PERMISSION_DENIED,
                f"token of {ident.name!r} may not send as agent {agent_id!r}",
            )

    def _refuse(self, rpc: str, code: grpc.StatusCode, message: str) -> AuthError:
        self._count(f"auth_refused:{rpc.lower()}:{code.name.lower()}")
        log.warning("call refused rpc=%s code=%s reason=%s", rpc, code.name, message)
        return AuthError(code, f"{rpc}: {message}")


def server_credentials(tls_cert: str, tls_key: str, tls_client_ca: str) -> grpc.ServerCredentials:
    """TLS server credentials; with a client CA, clients must present a certificate it signed (mTLS)."""
    client_ca = read_pem(tls_client_ca, "tls_client_ca") if tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read_pem(tls_key, "tls_key"), read_pem(tls_cert, "tls_cert"))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def check_server_security(cfg) -> list[str]:
    """Validate the collector's security keys; return warnings to log. Raise SecurityError if unsafe."""
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise SecurityError("collector: tls_cert and tls_key go together")
    if cfg.tls_client_ca and not cfg.tls_cert:
        raise SecurityError("collector: tls_client_ca (mutual TLS) needs tls_cert and tls_key")
    warnings: list[str] = []
    exposed = not is_loopback(cfg.listen)
    if not cfg.tls_cert:
        if exposed and not cfg.insecure:
            raise SecurityError(
                f"collector: listen = {cfg.listen!r} is not a loopback address: set tls_cert and tls_key "
                "(or insecure = true to accept plaintext)"
            )
        warnings.append(
            "serving plaintext gRPC "
            + ("(insecure = true)" if exposed else "on a loopback address (no tls_cert configured)")
        )
    if not cfg.tokens_file:
        if exposed and not cfg.insecure and not cfg.tls_client_ca:
            raise SecurityError(
                f"collector: listen = {cfg.listen!r} is not a loopback address: set tokens_file "
                "(or tls_client_ca for mutual TLS, or insecure = true) so that not anyone can push and query"
            )
        warnings.append("no tokens_file: any client that can connect may push and query")
    return warnings
