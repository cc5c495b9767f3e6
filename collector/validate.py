"""Checks a pushed batch against the catalogue; every refusal names what was wrong.

Order of the checks, cheapest and most dangerous first: the payload's size on the wire; the table
and its schema version; the rows and bytes it would decode to, read from the Arrow message
metadata before anything is decoded (a compressed payload of kilobytes can declare gigabytes);
the decoded columns against the catalogue; then the values the store or a reader could not take:
strings that are not UTF-8, timestamps outside what every reader represents, a NULL time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from c4.arrow_ipc import CachedSchemaDecoder, DecodeLimitError, DecodeLimits, Frame, InvalidColumn
from c4.catalogue import Catalogue, TableSpec
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.wire_limits import (
    DEFAULT_MAX_BATCH_DECODED_BYTES,
    DEFAULT_MAX_BATCH_ROWS,
    MAX_INVENTORY_ITEMS,
    MAX_INVENTORY_STRING_CHARS,
    MAX_JOB_CHARS,
    MAX_LABEL_VALUE_CHARS,
    MAX_LABELS,
    MAX_TS_US,
    MAX_VERSION_CHARS,
    MIN_TS_US,
    agent_id_problem,
    hostname_problem,
    label_key_problem,
    shown,
    text_problem,
    ts_text,
)

#: Longest refusal message sent back and logged (a schema of many long names must not echo whole).
MAX_MESSAGE_CHARS = 1000


@dataclass
class Refusal(Exception):
    """A batch refused: a gRPC status code, a message and a metrics counter name (for good unless retryable)."""

    code: grpc.StatusCode
    message: str
    counter: str

    def __post_init__(self) -> None:
        if not self.message.isprintable():  # it goes back to the client and into the log
            self.message = self.message.encode("unicode_escape").decode("ascii")
        if len(self.message) > MAX_MESSAGE_CHARS:
            self.message = f"{self.message[:MAX_MESSAGE_CHARS]}... ({len(self.message)} characters)"

    def __str__(self) -> str:
        return self.message

    @property
    def retryable(self) -> bool:
        """Whether the agent keeps the batch and sends it again later (UNAVAILABLE, INTERNAL)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


@dataclass(slots=True)
class Checked:
    """A batch that passed every check: its table spec, rows, wire span and newest time."""

    spec: TableSpec
    table: pa.Table
    #: Where the payload's record batches lie when its bytes hold exactly ``table`` (else None).
    span: tuple[int, int] | None
    #: The largest value of the table's time column, microseconds since the epoch (None: no rows).
    newest_us: int | None


_DECODER = CachedSchemaDecoder()
#: (table, schema key) pairs whose schema was found equal to the catalogue's: not compared again.
_MATCHING: set[tuple[str, bytes]] = set()
#: Per table: its spec, the indices of its timestamp columns and of its time column.
_COLUMNS: dict[str, tuple[TableSpec, tuple[int, ...], int | None]] = {}


def decode_checked(
    payload: bytes, limits: DecodeLimits | None = None
) -> tuple[pa.Table, bytes, tuple[int, int] | None]:
    """Arrow IPC stream bytes -> (table, schema key, record batch span); raises Refusal on corrupt data.

    Every value is validated as it is decoded: strings that are not UTF-8 are refused here rather
    than failing the commit of a whole group (retried batch by batch) in the store.
    """
    try:
        return _DECODER.decode_spans(payload, limits)
    except InvalidColumn as exc:
        utf8 = "UTF8" in exc.problem or "UTF-8" in exc.problem
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"column {shown(exc.column)} is not valid {'UTF-8' if utf8 else 'Arrow data'}: {exc.problem}",
            "refused_invalid_utf8" if utf8 else "refused_corrupt",
        ) from None
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT, f"corrupt Arrow IPC payload: {exc}", "refused_corrupt"
        ) from None


def validate_batch(
    catalogue: Catalogue,
    table_name: str,
    schema_version: int,
    payload: bytes,
    max_bytes: int,
    *,
    max_rows: int = DEFAULT_MAX_BATCH_ROWS,
    max_decoded_bytes: int = DEFAULT_MAX_BATCH_DECODED_BYTES,
) -> tuple[TableSpec, pa.Table]:
    """Validate one batch; return its table spec and decoded rows, or raise Refusal."""
    c = check_payload(
        catalogue, table_name, schema_version, payload, max_bytes, DecodeLimits(max_rows, max_decoded_bytes)
    )
    return c.spec, c.table


def validate_payload(
    catalogue: Catalogue,
    table_name: str,
    schema_version: int,
    payload: bytes,
    max_bytes: int,
    *,
    max_rows: int = DEFAULT_MAX_BATCH_ROWS,
    max_decoded_bytes: int = DEFAULT_MAX_BATCH_DECODED_BYTES,
) -> tuple[TableSpec, pa.Table, tuple[int, int] | None]:
    """As ``validate_batch``, plus the payload's record batch span when its bytes hold exactly the rows.

    The span is None when the rows had to be reordered or cast to the catalogue's schema.
    """
    c = check_payload(
        catalogue, table_name, schema_version, payload, max_bytes, DecodeLimits(max_rows, max_decoded_bytes)
    )
    return c.spec, c.table, c.span


def spec_for(
    catalogue: Catalogue, table_name: str, schema_version: int, payload: bytes, max_bytes: int
) -> TableSpec:
    """The table's spec once the payload's size, the table and its schema version pass; else Refusal."""
    if len(payload) > max_bytes:
        raise Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"batch payload is {len(payload)} bytes, over the limit of {max_bytes} bytes: split it",
            "refused_oversized",
        )
    if table_name not in catalogue:
        raise Refusal(
            grpc.StatusCode.NOT_FOUND, f"unknown table {shown(table_name)}", "refused_unknown_table"
        )
    spec = catalogue[table_name]
    if schema_version != spec.version:
        raise Refusal(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"table {table_name!r}: schema version {schema_version} sent, collector has version {spec.version}",
            "refused_schema_version",
        )
    return spec


def _limit_refusal(table_name: str, exc: DecodeLimitError) -> Refusal:
    """The refusal of a payload that would decode to more than the limits allow."""
    if exc.what == "messages":
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"table {table_name!r}: payload holds more than {exc.limit} Arrow messages: "
            "send its rows as fewer, larger record batches",
            "refused_decoded_size",
        )
    key = "max_batch_rows" if exc.what == "rows" else "max_batch_decoded_bytes"
    return Refusal(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"table {table_name!r}: batch declares {exc.declared} {exc.what} once decoded, over the "
        f"collector's {key} = {exc.limit}: send smaller batches",
        "refused_decoded_size",
    )


def check_payload(
    catalogue: Catalogue,
    table_name: str,
    schema_version: int,
    payload: bytes,
    max_bytes: int,
    limits: DecodeLimits,
) -> Checked:
    """Every check of one batch's table, version and payload; the Checked batch, or raise Refusal."""
    spec = spec_for(catalogue, table_name, schema_version, payload, max_bytes)
    return check_payload_of(spec, payload, limits)


def check_payload_of(spec: TableSpec, payload: bytes, limits: DecodeLimits) -> Checked:
    """The checks of ``check_payload`` after its table and version: decode, schema, values."""
    try:
        table, schema_key, span = decode_checked(payload, limits)
    except DecodeLimitError as exc:
        raise _limit_refusal(spec.name, exc) from None
    if (spec.name, schema_key) not in _MATCHING:
        if table.schema.equals(spec.arrow_schema):  # what agents send: nothing to compare or cast
            if len(_MATCHING) >= 4096:
                _MATCHING.clear()
            _MATCHING.add((spec.name, schema_key))
        else:
            table, span = _conform(spec, table), None
    return Checked(spec, table, span, check_values(spec, table))


def frame_payload(spec: TableSpec, payload: bytes, limits: DecodeLimits) -> Frame | None:
    """Where the payload's one record batch lies, undecoded, once ``spec_for`` passed it.

    Only for what agents send: a schema already found equal to the catalogue's, one record batch.
    None for anything else (``check_payload_of`` then does every check). Raises Refusal for rows and
    bytes over the limits. The values are checked later, many agents' batches of a table at once
    (``c4.collector.batch_checks``).
    """
    try:
        frame = _DECODER.frame(payload, limits)
    except DecodeLimitError as exc:
        raise _limit_refusal(spec.name, exc) from None
    except (struct.error, pa.ArrowInvalid):
        return None  # framing the fast path does not follow: the general reader names the problem
    if frame is None or (spec.name, frame.schema_key) not in _MATCHING:
        return None
    return frame


def decode_frames(framed) -> pa.Table:
    """Framed payloads of one schema -> one validated table (``CachedSchemaDecoder.decode_frames``)."""
    return _DECODER.decode_frames(framed)


def check_values(spec: TableSpec, table: pa.Table) -> int | None:
    """The value checks of ``check_payload`` on decoded rows: Refusal, else the newest time (us)."""
    if spec.element is not None and (problem := spec.list_length_errors(table)):
        raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"table {spec.name!r}: {problem}", "refused_columns")
    return _check_values(spec, table)


def _conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """The table with the catalogue's columns in its order and types, or raise Refusal naming the mismatch."""
    names = table.schema.names
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dups = sorted({n for n in names if n in seen or seen.add(n)})
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"table {spec.name!r}: duplicate column names {', '.join(shown(n) for n in dups)}",
            "refused_columns",
        )
    got = {f.name: f.type for f in table.schema}
    want = {f.name: f.type for f in spec.arrow_schema}
    missing = [n for n in want if n not in got]
    extra = [shown(n) for n in got if n not in want]
    wrong = [f"{n} is {got[n]}, expected {want[n]}" for n in want if n in got and got[n] != want[n]]
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unknown columns [{', '.join(extra)}]")
        if wrong:
            parts.append("wrong types: " + "; ".join(wrong))
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"table {spec.name!r}: columns do not match the catalogue: {', '.join(parts)}",
            "refused_columns",
        )
    # same order, same schema object: batches of one table concatenate for a single append
    return table.select(spec.column_names).cast(spec.arrow_schema)


def _columns_of(spec: TableSpec) -> tuple[tuple[int, ...], int | None]:
    """Indices of the spec's timestamp columns and of its time column (cached per spec)."""
    cols = _COLUMNS.get(spec.name)
    if cols is None or cols[0] is not spec:
        cols = _COLUMNS[spec.name] = (
            spec,
            tuple(i for i, c in enumerate(spec.columns) if c.type == "TIMESTAMP"),
            spec.column_names.index(spec.time_column) if spec.time_column else None,
        )
    return cols[1], cols[2]


#: struct unpackers of n little-endian int64s, for the small batches agents send
_INT64S = [struct.Struct(f"<{n}q").unpack_from for n in range(65)]


def _check_values(spec: TableSpec, table: pa.Table) -> int | None:
    """Refuse values the store or a reader cannot take; return the time column's largest value (us).

    Per batch this is the hot path of ingest: a few pyarrow accessors and plain Python for an
    agent's small batches, several times cheaper than a compute kernel call.
    """
    times, time_index = _columns_of(spec)
    newest = None
    for i in times:
        column = table.column(i)
        if column.null_count:
            if i == time_index:
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"table {spec.name!r}: time column {spec.columns[i].name!r} holds "
                    f"{column.null_count} null values",
                    "refused_timestamp",
                )
            low, high = _range_with_nulls(column)
        else:
            low, high = _range(column)
        if low is None:
            continue
        if low < MIN_TS_US or high > MAX_TS_US:
            value = low if low < MIN_TS_US else high
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"table {spec.name!r}: column {spec.columns[i].name!r} holds {ts_text(value)} ({value} us "
                f"since the epoch), outside {ts_text(MIN_TS_US)}..{ts_text(MAX_TS_US)}",
                "refused_timestamp",
            )
        if i == time_index:
            newest = high
    return newest


def _range(column: pa.ChunkedArray) -> tuple[int | None, int | None]:
    """(min, max) of a timestamp column without nulls, as raw int64 (a few values: struct, many: numpy)."""
    low = high = None
    for c in range(column.num_chunks):
        chunk = column.chunk(c)
        n = len(chunk)
        if not n:
            continue
        if n <= 64:
            values = _INT64S[n](chunk.buffers()[1], chunk.offset * 8)
            lo, hi = min(values), max(values)
        else:
            values = np.frombuffer(chunk.buffers()[1], dtype=np.int64, count=n, offset=chunk.offset * 8)
            lo, hi = int(values.min()), int(values.max())
        if low is None:
            low, high = lo, hi
        else:
            low, high = min(low, lo), max(high, hi)
    return low, high


def _range_with_nulls(column: pa.ChunkedArray) -> tuple[int | None, int | None]:
    """(min, max) of a timestamp column's non-null values, as raw int64."""
    found = pc.min_max(column.cast(pa.int64()))
    return found["min"].as_py(), found["max"].as_py()


def clamp_future(spec: TableSpec, table: pa.Table, limit_us: int, to_us: int) -> tuple[pa.Table, int]:
    """Set the time column of rows dated after ``limit_us`` to ``to_us``; (new table, rows changed)."""
    i = _columns_of(spec)[1]
    ts = table.column(i)
    ahead = pc.greater(ts.cast(pa.int64()), limit_us)
    n = pc.sum(ahead).as_py() or 0
    if not n:
        return table, 0
    to = pa.scalar(to_us, pa.int64()).cast(ts.type)
    return table.set_column(i, spec.arrow_schema.field(i), pc.if_else(ahead, to, ts)), n


def hello_problem(request: pb.HelloRequest) -> str | None:
    """What is wrong with a Hello (None if nothing): its agent id and every string and list it carries."""
    problem = agent_id_problem(request.agent_id) or hostname_problem(request.hostname)
    problem = problem or text_problem("job", request.job, MAX_JOB_CHARS)
    problem = problem or text_problem("agent_version", request.agent_version, MAX_VERSION_CHARS)
    if problem:
        return problem
    if len(request.labels) > MAX_LABELS:
        return f"{len(request.labels)} labels, over {MAX_LABELS}"
    for key, value in request.labels.items():
        problem = label_key_problem(key) or text_problem(f"label {key}", value, MAX_LABEL_VALUE_CHARS)
        if problem:
            return problem
    for field, items in (("gpus", request.gpus), ("nics", request.nics)):
        if len(items) > MAX_INVENTORY_ITEMS:
            return f"{len(items)} {field}, over {MAX_INVENTORY_ITEMS}"
        for item in items:
            for f, value in item.ListFields():
                if isinstance(value, str):
                    problem = text_problem(f"{field} {f.name}", value, MAX_INVENTORY_STRING_CHARS)
                    if problem:
                        return problem
    if len(request.table_versions) > MAX_INVENTORY_ITEMS:
        return f"{len(request.table_versions)} table_versions, over {MAX_INVENTORY_ITEMS}"
    for table in request.table_versions:
        problem = text_problem("table_versions key", table, MAX_INVENTORY_STRING_CHARS)
        if problem:
            return problem
    return None
