"""Read and validate C4's training-step trace (docs/step-trace.md): JSON lines or Parquet, one row per op per rank."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from c4.step_trace import OPS
from c4.wire_limits import MAX_TS_US, MIN_TS_US

COMPUTE_OPS: tuple[str, ...] = ("forward", "backward", "optimizer")
HOST_OPS: tuple[str, ...] = ("data_load", "checkpoint")
P2P_OPS: tuple[str, ...] = ("send_forward", "recv_forward", "send_backward", "recv_backward")
COLLECTIVE_OPS: tuple[str, ...] = ("reduce_scatter", "all_gather", "all_reduce", "all_to_all")
#: Ops that need a microbatch when the job has more than one pipeline stage.
MICROBATCH_OPS: tuple[str, ...] = ("forward", "backward", *P2P_OPS)

INT_COLUMNS: tuple[str, ...] = ("rank", "dp_rank", "pp_stage", "tp_rank", "step")
FLOAT_COLUMNS: tuple[str, ...] = ("start_s", "duration_s")
REQUIRED: tuple[str, ...] = ("job", *INT_COLUMNS[:4], "step", "op", *FLOAT_COLUMNS)
OPTIONAL_INT: tuple[str, ...] = ("microbatch", "local_rank", "ep_rank")
OPTIONAL_STR: tuple[str, ...] = ("host", "comm")
#: Op starts the store can hold (Unix seconds after 1970-01-01, up to 2262-04-11: what int64 nanoseconds
#: hold), the agent's step_trace sampler's bound (it counts a record outside as out_of_range).
MIN_START_S = MIN_TS_US / 1e6
MAX_START_S = MAX_TS_US / 1e6
#: Where each row came from, added by read_trace: the file and its 1-based line (JSONL) or 0-based row (Parquet).
FILE_COLUMN = "_file"
ROW_COLUMN = "_row"

#: send op -> (its recv op, the recv's stage minus the send's stage)
P2P_PAIRS: dict[str, tuple[str, int]] = {
    "send_forward": ("recv_forward", 1),
    "send_backward": ("recv_backward", -1),
}


class TraceError(ValueError):
    """A step trace that does not follow docs/step-trace.md; the message names file, line/row and column."""


def read_trace(path: Path | str) -> pl.DataFrame:
    """Every row of a trace file, or of every *.jsonl/*.parquet file of a directory, validated."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".jsonl", ".parquet"))
        if not files:
            raise TraceError(f"{path}: no *.jsonl or *.parquet files")
    elif path.is_file():
        files = [path]
    else:
        raise TraceError(f"{path}: no such file or directory")
    frames = [_read_file(p) for p in files]
    frames = [f for f in frames if not f.is_empty()]
    if not frames:
        raise TraceError(f"{path}: no trace rows")
    return validate_trace(pl.concat(frames, how="diagonal_relaxed"), str(path))


def _read_file(path: Path) -> pl.DataFrame:
    if path.suffix == ".parquet":
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several kinds for a bad file
            raise TraceError(f"{path}: not a readable Parquet file: {exc}") from exc
        return _checked_columns(df, str(path)).with_columns(
            pl.lit(str(path)).alias(FILE_COLUMN), pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_COLUMN)
        )
    if path.suffix != ".jsonl":
        raise TraceError(f"{path}: not a .jsonl or .parquet file")
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> pl.DataFrame:
    columns: dict[str, list[Any]] = {c: [] for c in (*REQUIRED, *OPTIONAL_INT, *OPTIONAL_STR, ROW_COLUMN)}
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rec = json.loads(raw)
            except ValueError as exc:
                raise TraceError(f"{where}: not a JSON object: {exc}") from exc
            if not isinstance(rec, dict):
                raise TraceError(f"{where}: not a JSON object")
            for col in REQUIRED:
                if col not in rec:
                    raise TraceError(f"{where}: missing column '{col}'")
            for col, value in rec.items():
                if col in columns:
                    _check_value(where, col, value)
            for col, values in columns.items():
                values.append(line_no if col == ROW_COLUMN else rec.get(col))
    schema = {
        **{c: pl.String for c in ("job", "op", *OPTIONAL_STR)},
        **{c: pl.Int64 for c in (*INT_COLUMNS, *OPTIONAL_INT, ROW_COLUMN)},
        **{c: pl.Float64 for c in FLOAT_COLUMNS},
    }
    df = pl.DataFrame(columns, schema={c: schema[c] for c in columns})
    optional = [c for c in (*OPTIONAL_INT, *OPTIONAL_STR) if df[c].null_count() == df.height]
    return df.drop(optional).with_columns(pl.lit(str(path)).alias(FILE_COLUMN))


def _check_value(where: str, col: str, value: Any) -> None:
    if value is None:
        if col in REQUIRED:
            raise TraceError(f"{where}: column '{col}' is null")
        return
    if col in (*INT_COLUMNS, *OPTIONAL_INT):
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif col in FLOAT_COLUMNS:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    else:
        ok = isinstance(value, str)
        expected = "a string"
    if not ok:
        raise TraceError(f"{where}: column '{col}' must be {expected}, got {value!r}")


def _checked_columns(df: pl.DataFrame, source: str) -> pl.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TraceError(f"{source}: missing column '{missing[0]}'")
    return df


def _where(df: pl.DataFrame, index: int, source: str) -> str:
    """'file:line' (JSONL), 'file row N' (Parquet) or 'source row N' for row ``index`` of ``df``."""
    if FILE_COLUMN in df.columns and ROW_COLUMN in df.columns:
        file, row = df[FILE_COLUMN][index], df[ROW_COLUMN][index]
        return f"{file} row {row}" if str(file).endswith(".parquet") else f"{file}:{row}"
    return f"{source or 'trace'} row {index}"


def validate_trace(df: pl.DataFrame, source: str = "") -> pl.DataFrame:
    """The trace with start_s/duration_s as Float64, or a TraceError naming the first bad row and column."""
    _checked_columns(df, source or "trace")
    for col in REQUIRED:
        dtype = df.schema[col]
        if col in INT_COLUMNS:
            ok = dtype.is_integer()
        elif col in FLOAT_COLUMNS:
            ok = dtype.is_numeric()
        else:
            ok = dtype == pl.String
        if not ok:
            raise TraceError(
                f"{source or 'trace'}: column '{col}' has type {dtype}, expected {_expected(col)}"
            )
    for col in (*OPTIONAL_INT, *OPTIONAL_STR):
        if col in df.columns and df[col].null_count() < df.height:
            dtype = df.schema[col]
            if (col in OPTIONAL_INT and not dtype.is_integer()) or (
                col in OPTIONAL_STR and dtype != pl.String
            ):
                raise TraceError(
                    f"{source or 'trace'}: column '{col}' has type {dtype}, expected {_expected(col)}"
                )
    df = df.with_columns(pl.col(c).cast(pl.Float64) for c in FLOAT_COLUMNS)
    indexed = df.with_row_index("_i")
    for col in REQUIRED:
        bad = indexed.filter(
            pl.col(col).is_null() | (pl.col(col).is_nan() if col in FLOAT_COLUMNS else False)
        )
        if not bad.is_empty():
            raise TraceError(f"{_where(df, bad['_i'][0], source)}: column '{col}' is null")
    bad = indexed.filter(~pl.col("op").is_in(OPS))
    if not bad.is_empty():
        raise TraceError(
            f"{_where(df, bad['_i'][0], source)}: column 'op': unknown op {bad['op'][0]!r}; one of {', '.join(OPS)}"
        )
    bad = indexed.filter(pl.col("duration_s") < 0)
    if not bad.is_empty():
        raise TraceError(
            f"{_where(df, bad['_i'][0], source)}: column 'duration_s' is negative ({bad['duration_s'][0]})"
        )
    bad = indexed.filter(pl.col("duration_s").is_infinite())
    if not bad.is_empty():
        raise TraceError(f"{_where(df, bad['_i'][0], source)}: column 'duration_s' is not finite")
    bad = indexed.filter(~pl.col("start_s").is_between(MIN_START_S, MAX_START_S, closed="right"))
    if not bad.is_empty():
        raise TraceError(
            f"{_where(df, bad['_i'][0], source)}: column 'start_s' is out of range ({bad['start_s'][0]}): "
            "not a Unix time in seconds between 1970 and 2262"
        )
    for col in INT_COLUMNS[:4]:
        bad = indexed.filter(pl.col(col) < 0)
        if not bad.is_empty():
            raise TraceError(f"{_where(df, bad['_i'][0], source)}: column '{col}' is negative")
    multi_stage = indexed.group_by("job").agg(pl.col("pp_stage").n_unique().alias("_stages"))
    needs = indexed.join(multi_stage, on="job").filter(
        (pl.col("_stages") > 1) & pl.col("op").is_in(MICROBATCH_OPS)
    )
    if not needs.is_empty():
        if "microbatch" not in df.columns:
            raise TraceError(
                f"{_where(df, needs['_i'][0], source)}: column 'microbatch' is missing; "
                f"{needs['op'][0]} needs it when the job has more than one pipeline stage"
            )
        bad = needs.filter(pl.col("microbatch").is_null())
        if not bad.is_empty():
            raise TraceError(
                f"{_where(df, bad['_i'][0], source)}: column 'microbatch' is null; "
                f"{bad['op'][0]} needs it when the job has more than one pipeline stage"
            )
    _check_p2p(indexed, df, source)
    return df


def _expected(col: str) -> str:
    if col in (*INT_COLUMNS, *OPTIONAL_INT):
        return "an integer"
    if col in FLOAT_COLUMNS:
        return "a number"
    return "a string"


def p2p_keys(df: pl.DataFrame) -> pl.DataFrame:
    """P2P rows with the key that pairs a send with its recv: direction, sender stage, occurrence index."""
    mb = pl.col("microbatch") if "microbatch" in df.columns else pl.lit(None, dtype=pl.Int64)
    fwd = pl.col("_fwd")
    p2p = df.filter(pl.col("op").is_in(P2P_OPS)).with_columns(
        mb.fill_null(-1).alias("_mb"),
        pl.col("op").is_in(("send_forward", "recv_forward")).alias("_fwd"),
        pl.col("op").is_in(("send_forward", "send_backward")).alias("_is_send"),
    )
    p2p = p2p.with_columns(
        pl.when(pl.col("_is_send"))
        .then(pl.col("pp_stage"))
        .when(fwd)
        .then(pl.col("pp_stage") - 1)
        .otherwise(pl.col("pp_stage") + 1)
        .alias("_send_stage")
    )
    key = ["job", "step", "dp_rank", "tp_rank", "_fwd", "_send_stage", "_mb", "_is_send"]
    return p2p.sort("start_s").with_columns(pl.int_range(pl.len()).over(key).alias("_occ"))


def _check_p2p(indexed: pl.DataFrame, df: pl.DataFrame, source: str) -> None:
    p2p = p2p_keys(indexed)
    if p2p.is_empty():
        return
    key = ["job", "step", "dp_rank", "tp_rank", "_fwd", "_send_stage", "_mb", "_occ"]
    sends = p2p.filter(pl.col("_is_send"))
    recvs = p2p.filter(~pl.col("_is_send"))
    for side, other, what in ((recvs, sends, "send"), (sends, recvs, "recv")):
        lone = side.join(other.select(key), on=key, how="anti")
        if not lone.is_empty():
            row = lone.sort("_i").row(0, named=True)
            raise TraceError(
                f"{_where(df, row['_i'], source)}: column 'op': {row['op']} (step {row['step']}, stage "
                f"{row['pp_stage']}, microbatch {row.get('microbatch')}, dp_rank {row['dp_rank']}, tp_rank "
                f"{row['tp_rank']}) has no matching {what}"
            )
