"""Checks a pushed batch against the catalogue; every refusal names what was wrong."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pyarrow as pa

from c4.arrow_ipc import CachedSchemaDecoder
from c4.catalogue import Catalogue, TableSpec


@dataclass
class Refusal(Exception):
    """A batch refused: a gRPC status code, a message and a metrics counter name (for good unless retryable)."""

    code: grpc.StatusCode
    message: str
    counter: str

    def __str__(self) -> str:
        return self.message

    @property
    def retryable(self) -> bool:
        """Whether the agent keeps the batch and sends it again later (UNAVAILABLE, INTERNAL)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


_DECODER = CachedSchemaDecoder()
#: (table, schema key) pairs whose schema was found equal to the catalogue's: not compared again.
_MATCHING: set[tuple[str, bytes]] = set()


def decode_checked(payload: bytes) -> tuple[pa.Table, bytes, tuple[int, int] | None]:
    """Arrow IPC stream bytes -> (table, schema key, record batch span); raises Refusal on corrupt data."""
    try:
        return _DECODER.decode_spans(payload)
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT, f"corrupt Arrow IPC payload: {exc}", "refused_corrupt"
        ) from None


def validate_batch(
    catalogue: Catalogue, table_name: str, schema_version: int, payload: bytes, max_bytes: int
) -> tuple[TableSpec, pa.Table]:
    """Validate one batch; return its table spec and decoded rows, or raise Refusal."""
    spec, table, _ = validate_payload(catalogue, table_name, schema_version, payload, max_bytes)
    return spec, table


def validate_payload(
    catalogue: Catalogue, table_name: str, schema_version: int, payload: bytes, max_bytes: int
) -> tuple[TableSpec, pa.Table, tuple[int, int] | None]:
    """As ``validate_batch``, plus the payload's record batch span when its bytes hold exactly the rows.

    The span is None when the rows had to be reordered or cast to the catalogue's schema.
    """
    if len(payload) > max_bytes:
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"batch payload is {len(payload)} bytes, over the limit of {max_bytes} bytes: split it",
            "refused_oversized",
        )
    if table_name not in catalogue:
        raise Refusal(grpc.StatusCode.NOT_FOUND, f"unknown table {table_name!r}", "refused_unknown_table")
    spec = catalogue[table_name]
    if schema_version != spec.version:
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"table {table_name!r}: schema version {schema_version} sent, collector has version {spec.version}",
            "refused_schema_version",
        )
    table, schema_key, span = decode_checked(payload)
    if (table_name, schema_key) in _MATCHING:
        return spec, table, span
    expected = spec.arrow_schema
    if table.schema.equals(expected):  # what agents send: nothing to check column by column or cast
        if len(_MATCHING) >= 4096:
            _MATCHING.clear()
        _MATCHING.add((table_name, schema_key))
        return spec, table, span
    got = {f.name: f.type for f in table.schema}
    want = {f.name: f.type for f in expected}
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    wrong = [f"{n} is {got[n]}, expected {want[n]}" for n in want if n in got and got[n] != want[n]]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unknown columns {extra}")
        if wrong:
            parts.append("wrong types: " + "; ".join(wrong))
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"table {table_name!r}: columns do not match the catalogue: {', '.join(parts)}",
            "refused_columns",
        )
    # same order, same schema object: batches of one table concatenate for a single append
    return spec, table.select(spec.column_names).cast(expected), None
