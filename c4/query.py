"""Client side of the Query RPC: SQL in, a pyarrow Table out (used by `c4 sql`, the UI and tests)."""

from __future__ import annotations

import grpc
import pyarrow as pa
import pyarrow.ipc as ipc

from c4.config import check_address
from c4.security import ClientSecurity
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


class QueryError(RuntimeError):
    """The collector refused or failed the query, or could not be reached."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


def query_security(config_path: str | None = None) -> ClientSecurity:
    """TLS files and reader token: ``[query]`` of ``config_path`` or $C4_CONFIG, then C4_QUERY_* variables."""
    return ClientSecurity.from_env("query", config_path)


#: Words gRPC's detail holds when the server closed a plaintext connection at once (a TLS server does).
_CLOSED_AT_ONCE = ("Socket closed", "Connection reset")


def query_error(exc: grpc.RpcError, plaintext: bool = False) -> QueryError:
    """A failed RPC as a QueryError naming its code and detail (unreachable collectors said so; a
    ``plaintext`` channel that the server closed at once is said to be likely a TLS collector)."""
    code = exc.code()
    detail = exc.details() or str(code)
    if code == grpc.StatusCode.UNAVAILABLE:
        detail = f"collector unreachable: {detail}"
        if plaintext and any(words in detail for words in _CLOSED_AT_ONCE):
            detail += (
                " (this client spoke plaintext and the collector closed the connection: if it serves TLS, "
                "give its CA with --tls-ca or [query] tls_ca)"
            )
    return QueryError(detail, code)


def settled_security(security: ClientSecurity | None) -> ClientSecurity:
    """``security``, or when None the ``[query]`` settings of $C4_CONFIG and C4_QUERY_* (QueryError if bad)."""
    if security is not None:
        return security
    try:
        return query_security()
    except ValueError as exc:  # ConfigError, SecurityError: $C4_CONFIG or a C4_QUERY_* setting
        raise QueryError(f"query settings: {exc}", grpc.StatusCode.FAILED_PRECONDITION) from None


def open_channel(address: str, security: ClientSecurity | None = None) -> grpc.Channel:
    """A channel to a collector with message limits that fit query results.

    ``security`` None: ``[query]`` of $C4_CONFIG and C4_QUERY_* variables (plaintext on loopback by default).
    """
    try:
        check_address(address)
    except ValueError as exc:
        raise QueryError(
            f"collector address {exc} (e.g. 127.0.0.1:7070)", grpc.StatusCode.INVALID_ARGUMENT
        ) from None
    return settled_security(security).channel(address, [("grpc.max_receive_message_length", 256 << 20)])


def query_arrow(
    address_or_channel: str | grpc.Channel,
    sql: str,
    max_rows: int = 0,
    timeout_s: float = 0.0,
    security: ClientSecurity | None = None,
) -> tuple[pa.Table, bool]:
    """Run read-only SQL on a collector; returns (table, truncated)."""
    plaintext = False
    if isinstance(address_or_channel, str):
        own, security = True, settled_security(security)
        channel = open_channel(address_or_channel, security)
        plaintext = not security.uses_tls(address_or_channel)
    else:
        own, channel = False, address_or_channel
    try:
        stub = pb_grpc.TelemetryStub(channel)
        batches: list[pa.RecordBatch] = []
        schema = None
        truncated = False
        deadline = (timeout_s + 30.0) if timeout_s else None
        try:
            for chunk in stub.Query(
                pb.QueryRequest(sql=sql, max_rows=max_rows, timeout_s=timeout_s), timeout=deadline
            ):
                reader = ipc.open_stream(pa.py_buffer(chunk.arrow_ipc))
                schema = reader.schema
                batches.extend(reader)
                truncated = truncated or chunk.truncated
        except grpc.RpcError as exc:
            raise query_error(exc, plaintext) from None
        if schema is None:
            raise QueryError("collector returned no result")
        return pa.Table.from_batches(batches, schema=schema), truncated
    finally:
        if own:
            channel.close()
