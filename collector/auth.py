"""Collector side of security: who calls (a bearer token, or a client certificate), what each may do,
and TLS server credentials.

Tokens file, one token a line (``#`` starts a comment)::

    <token>  agent   gpu-node-017   # Hello/Push as agent gpu-node-017 of node gpu-node-017 only
    <token>  agent   *              # as any agent and node (one token for a whole DaemonSet)
    <token>  reader  grafana        # may Query and read Stats
    <token>  reader,operator  ops   # may also acknowledge/resolve faults (UpdateFault) and hold
                                    # or release remediation (SetHold)
    <token>  planner c4-plan        # may push C4P plans (c4 plan --collector)

Without a tokens file but with mutual TLS, the client certificate's subject Common Name is the
identity and ``mtls_roles`` (name -> roles, ``*`` for every other certificate) gives its roles.

A table is pushed only by the role its catalogue entry names as ``writer`` (agents: the agent
tables; derived tables such as faults are written by the collector alone), and an agent's rows only
for its own node: the identity's name, or, under a ``*`` token, the node its Hello registered.
A missing or unknown token or certificate is refused with UNAUTHENTICATED, a known one without the
role (or speaking for another agent or node) with PERMISSION_DENIED; both are counted.
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

#: Roles that push the tables whose catalogue ``writer`` they are.
PUSH_ROLES = frozenset({"agent", "planner", "sim"})
ROLES = PUSH_ROLES | {"reader", "operator"}
#: RPC method name -> roles of which it needs one.
RPC_ROLES = {
    "Hello": frozenset({"agent"}),
    "Push": PUSH_ROLES,
    "PushBundle": PUSH_ROLES,
    "Query": frozenset({"reader"}),
    "Stats": frozenset({"reader"}),
    "UpdateFault": frozenset({"operator"}),
    "SetHold": frozenset({"operator"}),
    "ListHolds": frozenset({"reader", "operator"}),
}
MIN_TOKEN_CHARS = 16
#: Metadata an ingest process adds to a call it relays over the private socket: the client
#: certificate's name it saw (trusted only from that socket, see certificate_name).
CERT_NAME_KEY = "x-c4-certificate-name"


@dataclass(frozen=True)
class Identity:
    """Who calls: a name (agent id and node, ``*`` for any agent, or a reader's name) and roles."""

    name: str
    roles: frozenset[str]

    def may_push_as(self, agent_id: str) -> bool:
        """Whether this identity may send batches for ``agent_id``."""
        return bool(self.roles & PUSH_ROLES) and self.name in ("*", agent_id)

    @property
    def node(self) -> str | None:
        """The only node this identity may register and write rows for (None: any, a ``*`` token)."""
        return None if self.name == "*" else self.name


def parse_roles(text: str, where: str) -> frozenset[str]:
    """``agent`` or ``reader,operator`` -> roles; SecurityError naming ``where`` when unknown."""
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    if not roles or roles - ROLES:
        raise SecurityError(f"{where}: roles must be some of {', '.join(sorted(ROLES))}, got {text!r}")
    return roles


def mtls_roles_of(cfg) -> dict[str, frozenset[str]] | None:
    """Certificate name -> roles when client certificates identify callers (mutual TLS, no tokens file)."""
    if not cfg.tls_client_ca or cfg.tokens_file:
        return None
    return {name: parse_roles(roles, f"mtls_roles[{name!r}]") for name, roles in cfg.mtls_roles.items()}


def certificate_name(context) -> str | None:
    """The client certificate's subject Common Name, or the one an ingest process relayed.

    A relayed name is believed only on the collector's private unix socket (a ``0700`` directory),
    where only its own ingest processes connect.
    """
    names = (context.auth_context() or {}).get("x509_common_name")
    if names:
        return names[0].decode("utf-8", "replace")
    if (context.peer() or "").startswith("unix:"):
        for key, value in context.invocation_metadata() or ():
            if key == CERT_NAME_KEY and isinstance(value, str):
                return value
    return None


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
            roles = parse_roles(roles_s, f"tokens_file {path} line {n}")
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
    """Checks each RPC's caller: a bearer token from the tokens file, else (mutual TLS without one) the
    client certificate's name against ``mtls_roles``; with neither, everyone may do everything."""

    def __init__(
        self, tokens: TokenTable | None, count, mtls_roles: dict[str, frozenset[str]] | None = None
    ) -> None:
        self.tokens = tokens
        self.mtls_roles = mtls_roles if tokens is None else None
        self._count = count  # count(name) adds one to a collector counter

    @property
    def enabled(self) -> bool:
        """Whether callers are checked at all."""
        return self.tokens is not None or self.mtls_roles is not None

    def identify(self, rpc: str, metadata, certificate: str | None = None) -> Identity | None:
        """The caller's identity for ``rpc``; raise AuthError (counted) if refused. None when disabled."""
        if self.tokens is not None:
            token = bearer_token(metadata)
            if not token:
                raise self.refuse(rpc, grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
            ident = self.tokens.lookup(token)
            if ident is None:
                raise self.refuse(rpc, grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")
            who = f"token of {ident.name!r}"
        elif self.mtls_roles is not None:
            if not certificate or certificate == "*":
                raise self.refuse(rpc, grpc.StatusCode.UNAUTHENTICATED, "no client certificate name")
            roles = self.mtls_roles.get(certificate, self.mtls_roles.get("*"))
            if not roles:
                raise self.refuse(
                    rpc,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate {certificate!r} has no role (mtls_roles)",
                )
            ident, who = Identity(certificate, roles), f"certificate {certificate!r}"
        else:
            return None
        needed = RPC_ROLES[rpc]
        if not needed & ident.roles:
            role = " or ".join(sorted(needed))
            raise self.refuse(rpc, grpc.StatusCode.PERMISSION_DENIED, f"{who} lacks the {role} role")
        return ident

    def check_agent(self, rpc: str, ident: Identity | None, agent_id: str) -> None:
        """Refuse (counted) when the caller may not speak for ``agent_id``."""
        if ident is not None and not ident.may_push_as(agent_id):
            raise self.refuse(
                rpc,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{ident.name!r} may not send as agent {agent_id!r}",
            )

    def check_node(self, rpc: str, ident: Identity | None, node: str) -> None:
        """Refuse (counted) a Hello registering a node the caller is not."""
        if ident is not None and ident.node is not None and node != ident.node:
            raise self.refuse(
                rpc,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{ident.name!r} may register node {ident.name!r} only",
            )

    def count(self, rpc: str, code: grpc.StatusCode) -> None:
        """Count one refusal of ``rpc`` (auth_refused:<rpc>:<code>)."""
        self._count(f"auth_refused:{rpc.lower()}:{code.name.lower()}")

    def refuse(self, rpc: str, code: grpc.StatusCode, message: str) -> AuthError:
        """Count and log a refusal; the error to abort the call with."""
        self.count(rpc, code)
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
    if cfg.mtls_roles and (cfg.tokens_file or not cfg.tls_client_ca):
        raise SecurityError(
            "collector: mtls_roles gives client certificates their roles under mutual TLS without a "
            "tokens_file (set tls_client_ca and no tokens_file, or drop mtls_roles)"
        )
    if cfg.tls_client_ca and not cfg.tokens_file:
        if not cfg.mtls_roles:
            raise SecurityError(
                "collector: mutual TLS without tokens_file needs mtls_roles, the roles of each client "
                'certificate name (e.g. mtls_roles = {"*" = "agent", "dashboard" = "reader"})'
            )
        mtls_roles_of(cfg)  # names an unknown role now rather than at the first call
    elif not cfg.tokens_file:
        if exposed and not cfg.insecure:
            raise SecurityError(
                f"collector: listen = {cfg.listen!r} is not a loopback address: set tokens_file "
                "(or tls_client_ca for mutual TLS, or insecure = true) so that not anyone can push and query"
            )
        warnings.append("no tokens_file: any client that can connect may push and query")
    return warnings
