"""The table catalogue: every table, column, type, unit and kind, declared once as data.

Each ``tables/*.toml`` file declares tables of one source. DuckDB DDL, Arrow
schemas, rate views and the schema docs are all generated from it.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyarrow is imported where an Arrow type is asked for: the agent never loads it
    import pyarrow as pa

TABLES_DIR = Path(__file__).parent / "tables"

#: The only DuckDB types a catalogue may use (``ARROW_TYPES`` maps each to its Arrow type).
TYPES = ("VARCHAR", "BOOLEAN", "INTEGER", "BIGINT", "UBIGINT", "DOUBLE", "TIMESTAMP")


@functools.cache
def _arrow_types() -> dict[str, pa.DataType]:
    """DuckDB type -> Arrow type, built on first use (importing pyarrow costs ~37 MiB resident)."""
    import pyarrow as pa  # lazy: the agent never loads pyarrow (~37 MiB resident)

    return {
        "VARCHAR": pa.string(),
        "BOOLEAN": pa.bool_(),
        "INTEGER": pa.int32(),
        "BIGINT": pa.int64(),
        "UBIGINT": pa.uint64(),
        "DOUBLE": pa.float64(),
        "TIMESTAMP": pa.timestamp("us"),
    }


def __getattr__(name: str):
    """``ARROW_TYPES`` (DuckDB type -> Arrow type), imported lazily."""
    if name == "ARROW_TYPES":
        return _arrow_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


KINDS = ("label", "gauge", "counter", "time")

#: Who writes a table: ``agent`` (each node's agent, only rows of its own node), ``collector``
#: (the collector itself: derived and bookkeeping tables, never pushed), or the name of the one
#: role that may push it (``planner`` for C4P plans, ``sim`` for the digital twin's ground truth).
WRITERS = ("agent", "collector", "planner", "sim")

#: Columns every table starts with unless it sets ``common = false``.
COMMON_COLUMNS: tuple[dict, ...] = (
    {"name": "ts", "type": "TIMESTAMP", "unit": "UTC", "kind": "time", "help": "Sample time (UTC)."},
    {"name": "node", "type": "VARCHAR", "unit": "", "kind": "label", "help": "Host name of the node."},
    {"name": "job", "type": "VARCHAR", "unit": "", "kind": "label", "help": "Training job id ('' if none)."},
)


class CatalogueError(ValueError):
    """A catalogue file is malformed; the message names the file, table and column."""


@dataclass(frozen=True)
class ColumnSpec:
    """One typed column with its unit and kind."""

    name: str
    type: str
    unit: str
    kind: str
    help: str
    wrap_bits: int = 0
    #: a LIST column of a wide table: one element per entity of the table's ``per_element`` key
    list: bool = False
    #: a rarely moving counter of a wide table: sent on change and on keyframes, a NULL list otherwise
    on_change: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type rows of this column are sent as."""
        base = _arrow_types()[self.type]
        if not self.list:
            return base
        import pyarrow as pa  # lazy: the agent never loads pyarrow

        return pa.list_(base)

    @property
    def sql_type(self) -> str:
        """The DuckDB type the column is stored as."""
        return f"{self.type}[]" if self.list else self.type


@dataclass(frozen=True)
class TableSpec:
    """One table: its columns, entity keys and schema version."""

    name: str
    help: str
    version: int
    keys: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]
    source: str
    retention: bool = True
    time_column: str | None = "ts"
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    writer: str = "collector"  # one of WRITERS: who may write its rows
    #: a wide table: the per-element view it stores (None for an ordinary table)
    element: ElementSpec | None = None
    #: the stored wide table, when this spec is a per-element view's shape (None for a stored table)
    stored_in: str | None = None
    rollup: bool = False  # the collector keeps <name>_1m and <name>_1h rollups of it (catalogue/rollup.py)
    #: labels a rollup groups by beside the keys (e.g. a collective's kind and op): a table without counters only
    rollup_by: tuple[str, ...] = ()
    #: numeric labels a rollup keeps min/mean/max/last of, as of a gauge (e.g. the last collective sequence number)
    rollup_stats: tuple[str, ...] = ()

    @functools.cached_property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema a batch for this table must have."""
        import pyarrow as pa  # lazy: the agent never loads pyarrow (~37 MiB resident)

        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        """Column names in declaration order."""
        return [c.name for c in self.columns]

    @property
    def counters(self) -> list[ColumnSpec]:
        """The monotonic counter columns (scalar ones: a wide table's rates come from its element view)."""
        return [c for c in self.columns if c.kind == "counter" and not c.list]

    @property
    def is_view(self) -> bool:
        """True for a per-element view's shape (rows come from a wide table, none are stored or pushed)."""
        return self.stored_in is not None

    def ddl(self) -> str:
        """CREATE TABLE statement for DuckDB (CREATE VIEW for a per-element view's shape)."""
        if self.stored_in is not None:
            raise CatalogueError(f"{self.name!r} is a view over {self.stored_in!r}: use element_view_ddl")
        cols = ",\n  ".join(f'"{c.name}" {c.sql_type}' for c in self.columns)
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n  {cols}\n)'

    def element_view_ddl(self) -> str | None:
        """The per-element view of a wide table: one row per element, as an ordinary table would hold.

        An ``on_change`` column's NULL list means "not sent: unchanged since the last row of this entity
        that carried it", so the view first fills it from that row (per entity, by time), then unnests
        every list column together: element i of every list belongs to element i of the key list.
        A time filter on the view cannot reach the table under the fill: a reader of a time window
        uses ``element_window_sql`` instead, which reads only the window and one keyframe period.
        """
        if self.element is None:
            return None
        return f'CREATE OR REPLACE VIEW "{self.element.view}" AS {self._element_select("")}'

    def element_window_sql(self) -> str:
        """SELECT of the per-element rows with ts in [?, ?] (params: start, end): exact and bounded.

        The wide rows read start one ``keyframe_within_s`` before the window, so every unsent counter
        in the window is filled from a row that carried it, and no more of the table is read.
        """
        el = self.element
        if el is None:
            raise CatalogueError(f"{self.name!r} is not a wide table")
        t = f'"{self.time_column}"'
        where = (
            f"WHERE {t} >= CAST($start AS TIMESTAMP) - INTERVAL {el.keyframe_within_s:g} SECOND "
            f"AND {t} <= CAST($end AS TIMESTAMP)"
        )
        return f"SELECT * FROM ({self._element_select(where)}) WHERE {t} >= CAST($start AS TIMESTAMP)"

    def _element_select(self, where: str) -> str:
        """The per-element SELECT over the wide rows that pass ``where`` (a WHERE clause or '')."""
        part = ", ".join(f'"{k}"' for k in self.keys)
        inner = [
            f'last_value("{c.name}" IGNORE NULLS) OVER w AS "{c.name}"' if c.on_change else f'"{c.name}"'
            for c in self.columns
        ]
        outer = [f'unnest("{c.name}") AS "{c.name}"' if c.list else f'"{c.name}"' for c in self.columns]
        if any(c.on_change for c in self.columns):
            filled = (
                f'SELECT {", ".join(inner)} FROM "{self.name}" {where} WINDOW w AS (PARTITION BY {part} '
                f'ORDER BY "{self.time_column}" ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)'
            )
        else:
            filled = f'SELECT * FROM "{self.name}" {where}'
        return f"SELECT {', '.join(outer)} FROM ({filled})"

    def element_spec(self) -> TableSpec | None:
        """The shape of the per-element view (scalar columns, the element key added): what readers see."""
        el = self.element
        if el is None:
            return None
        cols = tuple(ColumnSpec(c.name, c.type, c.unit, c.kind, c.help, c.wrap_bits) for c in self.columns)
        return TableSpec(
            name=el.view,
            help=el.help,
            version=self.version,
            keys=(*self.keys, el.key),
            columns=cols,
            source=self.source,
            retention=False,
            time_column=self.time_column,
            writer=self.writer,
            stored_in=self.name,
            rollup=self.rollup,  # a wide table is rolled up per element: <view>_1m, <view>_1h
        )

    def element_rows(self, rows: Iterable[Mapping[str, Any]], carried: dict | None = None) -> list[dict]:
        """Wide rows as per-element rows, as the per-element view gives them (rows in time order).

        ``carried`` holds the last list sent of each on-change column per entity; pass the same dict
        across calls to fill rows whose counters were not sent, as the view fills them from the store.
        """
        el = self.element
        if el is None:
            return [dict(r) for r in rows]
        carried = {} if carried is None else carried
        lists = [c.name for c in self.columns if c.list]
        out = []
        for r in rows:
            entity = tuple(r.get(k) for k in self.keys)
            row = dict(r)
            for c in self.columns:
                if c.on_change:
                    if row.get(c.name) is None:
                        row[c.name] = carried.get((entity, c.name))
                    else:
                        carried[(entity, c.name)] = row[c.name]
            for i, element in enumerate(row.get(el.key) or ()):
                one = {k: v for k, v in row.items() if k not in lists}
                for name in lists:
                    values = row.get(name)
                    one[name] = values[i] if values is not None and i < len(values) else None
                one[el.key] = element
                out.append(one)
        return out

    def migrate_from_element_table_sql(self, con) -> str | None:
        """INSERT moving a store's old per-element table (as the view's name) into this wide table, or None.

        Stores made before a table was wide hold its rows one per element under the view's name;
        grouped by row key and time they become the wide rows, every column carried.
        """
        el = self.element
        if el is None:
            return None
        found = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = current_schema()",
            [el.view],
        ).fetchone()
        if not found or not found[0]:
            return None
        group = [
            f'"{c.name}"'
            for c in self.columns
            if not c.list and (c.name in self.keys or c.kind == "time" or c.name == "job")
        ]
        cols = [
            f'list("{c.name}" ORDER BY "{el.key}")'
            if c.list
            else (f'"{c.name}"' if f'"{c.name}"' in group else f'any_value("{c.name}")')
            for c in self.columns
        ]
        names = ", ".join(f'"{c.name}"' for c in self.columns)
        return (
            f'INSERT INTO "{self.name}" ({names}) SELECT {", ".join(cols)} FROM "{el.view}" '
            f"GROUP BY {', '.join(group)}"
        )

    def list_length_errors(self, table: pa.Table) -> str | None:
        """Why a wide table's batch is malformed (a list longer or shorter than the key list), or None.

        A NULL list is allowed (an on-change counter not sent, or a column no element reports). Read
        from the offsets and validity buffers in plain Python: an agent's batch has a few rows, and a
        compute kernel per column cost 30x more (700 us per 8-row NVLink batch).
        """
        el = self.element
        if el is None or el.key not in table.column_names:
            return None
        names = table.schema.names
        lists = {c.name for c in self.columns if c.list and c.name != el.key}
        key = table.column(names.index(el.key))
        for k in range(key.num_chunks):
            key_chunk = key.chunk(k)
            start, end = key_chunk.offset * 4, (key_chunk.offset + len(key_chunk) + 1) * 4
            key_offsets = memoryview(key_chunk.buffers()[1] or b"")[start:end]
            want = None
            for i, name in enumerate(names):
                if name not in lists:
                    continue
                chunk = table.column(i).chunk(k)
                nulls = chunk.null_count
                if nulls == len(chunk):  # not sent this tick, or reported by no element
                    continue
                if not nulls and chunk.offset == key_chunk.offset:  # the common case: the same offsets
                    if memoryview(chunk.buffers()[1])[start:end] == key_offsets:
                        continue
                want = want or _list_lengths(key_chunk)
                got = _list_lengths(chunk)
                n = sum(1 for g, w in zip(got, want, strict=True) if g is not None and g != w)
                if n:
                    return (
                        f"column {name!r} holds a list of another length than {el.key!r}'s in {n} rows "
                        f"(each list has one element per {el.key})"
                    )
        return None

    def rate_terms(self, window: str = "w") -> list[tuple[ColumnSpec, str, str]]:
        """Per counter: (column, SQL of its increase since the last value read, SQL of the seconds it covers).

        Both use the window named ``window`` (partitioned by the keys, ordered by time). A counter
        that goes down either wrapped (when it declares ``wrap_bits`` and the previous value sat in
        the top quarter of its range) or was reset (the new value is the increase since the reset).
        A NULL counter (not read that tick) gets NULL; the next value is compared with the last one read.
        """
        t = self.time_column
        terms = []
        for c in self.counters:
            wide = "DOUBLE" if c.type == "DOUBLE" else "HUGEINT"
            cur = f'CAST("{c.name}" AS {wide})'
            prev = f'CAST(lag("{c.name}" IGNORE NULLS) OVER {window} AS {wide})'
            prev_ts = f'lag(CASE WHEN "{c.name}" IS NOT NULL THEN "{t}" END IGNORE NULLS) OVER {window}'
            dt_c = f'(epoch_us("{t}") - epoch_us({prev_ts})) / 1e6'
            if c.wrap_bits:
                mod = 2**c.wrap_bits
                down = f"CASE WHEN {prev} >= {mod * 3 // 4} THEN {cur} + {mod} - {prev} ELSE {cur} END"
            else:
                down = cur
            delta = (
                f"CASE WHEN {cur} IS NULL OR {prev} IS NULL THEN NULL WHEN {cur} >= {prev} THEN {cur} - {prev} "
                f"ELSE {down} END"
            )
            terms.append((c, f"CAST({delta} AS DOUBLE)", dt_c))
        return terms

    def rate_window(self) -> str:
        """The window the rate terms run over: per entity key, in time order."""
        part = ", ".join(f'"{k}"' for k in self.keys) or "1"
        return f'(PARTITION BY {part} ORDER BY "{self.time_column}")'

    def rate_view_ddl(self) -> str | None:
        """A ``<table>_rate`` view turning counters into per-second rates (see ``rate_terms``)."""
        counters = self.counters
        if not counters or not self.time_column or self.element is not None:
            return None  # a wide table's rates come from its per-element view
        dt = f'(epoch_us("{self.time_column}") - epoch_us(lag("{self.time_column}") OVER w)) / 1e6'
        labels = [c for c in self.columns if c.kind == "label"]
        select = [f'"{self.time_column}"'] + [f'"{c.name}"' for c in labels]
        select.append(f"{dt} AS interval_s")
        for c, delta, dt_c in self.rate_terms():
            unit = c.unit or "units"
            select.append(f'{delta} / nullif({dt_c}, 0) AS "{c.name}_per_s" /* {unit}/s */')
        body = ",\n  ".join(select)
        return (
            f'CREATE OR REPLACE VIEW "{self.name}_rate" AS SELECT\n  {body}\nFROM "{self.name}"\n'
            f"WINDOW w AS {self.rate_window()}"
        )


def _list_lengths(arr: pa.ListArray) -> list[int | None]:
    """Each list's length (None for a NULL list), from the array's offsets and validity buffers."""
    n, off = len(arr), arr.offset
    validity, offsets = arr.buffers()[0], arr.buffers()[1]
    if offsets is None or not n:
        return [None] * n
    o = memoryview(offsets)[: (off + n + 1) * 4].cast("i")
    lengths: list[int | None] = [o[off + i + 1] - o[off + i] for i in range(n)]
    if arr.null_count and validity is not None:
        bits = memoryview(validity)
        for i in range(n):
            j = off + i
            if not (bits[j >> 3] >> (j & 7)) & 1:
                lengths[i] = None
    return lengths


def _parse_table(source: str, name: str, raw: dict) -> TableSpec:
    where = f"{source}: table {name!r}"
    unknown = set(raw) - {
        "help",
        "version",
        "keys",
        "columns",
        "common",
        "retention",
        "time_column",
        "extra",
        "writer",
        "per_element",
        "rollup",
        "rollup_by",
        "rollup_stats",
    }
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    if not raw.get("help"):
        raise CatalogueError(f"{where}: missing 'help'")
    cols_raw = list(COMMON_COLUMNS) if raw.get("common", True) else []
    cols_raw += raw.get("columns", [])
    columns: list[ColumnSpec] = []
    seen: set[str] = set()
    for col in cols_raw:
        cname = col.get("name")
        if not cname:
            raise CatalogueError(f"{where}: a column without 'name'")
        if cname in seen:
            raise CatalogueError(f"{where}: column {cname!r} declared twice")
        seen.add(cname)
        ctype = col.get("type", "")
        if ctype not in TYPES:
            raise CatalogueError(f"{where}: column {cname!r} has unknown type {ctype!r}")
        kind = col.get("kind", "")
        if kind not in KINDS:
            raise CatalogueError(f"{where}: column {cname!r} has kind {kind!r}, expected one of {KINDS}")
        if not col.get("help"):
            raise CatalogueError(f"{where}: column {cname!r} has no 'help'")
        bad_keys = set(col) - {"name", "type", "unit", "kind", "help", "wrap_bits", "list", "on_change"}
        if bad_keys:
            raise CatalogueError(f"{where}: column {cname!r} has unknown keys {sorted(bad_keys)}")
        is_list, on_change = bool(col.get("list", False)), bool(col.get("on_change", False))
        if on_change and not (is_list and kind == "counter"):
            raise CatalogueError(f"{where}: column {cname!r}: on_change is for list counter columns only")
        columns.append(
            ColumnSpec(
                cname,
                ctype,
                col.get("unit", ""),
                kind,
                col["help"],
                int(col.get("wrap_bits", 0)),
                is_list,
                on_change,
            )
        )
    keys = tuple(raw.get("keys", ["node"]))
    for k in keys:
        if k not in seen:
            raise CatalogueError(f"{where}: key {k!r} is not a column")
    time_column = raw.get("time_column", "ts" if "ts" in seen else None)
    writer = raw.get("writer", "collector")  # unsaid: nobody pushes it
    if writer not in WRITERS:
        raise CatalogueError(f"{where}: writer {writer!r}, expected one of {WRITERS}")
    if writer == "agent" and "node" not in seen:
        raise CatalogueError(
            f"{where}: an agent-written table needs a 'node' column (an agent writes its own)"
        )
    element = _parse_element(where, raw.get("per_element"), columns, keys)
    return TableSpec(
        name=name,
        help=raw["help"],
        version=int(raw.get("version", 1)),
        keys=keys,
        columns=tuple(columns),
        source=source,
        retention=bool(raw.get("retention", True)),
        time_column=time_column,
        extra=dict(raw.get("extra", {})),
        writer=writer,
        element=element,
        rollup=_rollup_flag(where, raw, columns, keys, time_column),
        rollup_by=_rollup_labels(where, raw, "rollup_by", columns, keys),
        rollup_stats=_rollup_labels(where, raw, "rollup_stats", columns, keys),
    )


def _rollup_labels(
    where: str, raw: dict, what: str, columns: list[ColumnSpec], keys: tuple
) -> tuple[str, ...]:
    """A rollup's ``rollup_by`` or ``rollup_stats`` label list, checked against the table's columns."""
    names = raw.get(what, [])
    if not names:
        return ()
    if not raw.get("rollup", False):
        raise CatalogueError(f"{where}: {what} needs rollup = true")
    by_name = {c.name: c for c in columns}
    for n in names:
        col = by_name.get(n)
        if col is None or col.kind != "label" or col.list or n in keys:
            raise CatalogueError(f"{where}: {what} {n!r} is not a scalar label column outside the keys")
        if what == "rollup_stats" and col.type not in ("INTEGER", "BIGINT", "UBIGINT", "DOUBLE"):
            raise CatalogueError(f"{where}: rollup_stats {n!r} is not numeric")
    if what == "rollup_by" and any(c.kind == "counter" for c in columns):
        # a counter's rate is per entity (the keys): grouping its samples by more labels would split the series
        raise CatalogueError(f"{where}: rollup_by is for tables without counters")
    return tuple(names)


def _rollup_flag(where: str, raw: dict, columns: list[ColumnSpec], keys: tuple, time_column) -> bool:
    """The table's ``rollup`` declaration, checked: it needs a time column, keys and something to roll up."""
    rollup = raw.get("rollup", False)
    if not isinstance(rollup, bool):
        raise CatalogueError(f"{where}: rollup must be true or false, not {rollup!r}")
    if rollup and (not time_column or not keys or not any(c.kind in ("gauge", "counter") for c in columns)):
        raise CatalogueError(f"{where}: rollup = true needs a time column, keys and a gauge or counter")
    return rollup


@dataclass(frozen=True)
class ElementSpec:
    """A wide table's element: its key list column, and the view giving one row per element."""

    key: str
    view: str
    help: str
    #: agents send every on-change counter at least this often: a reader fills from rows this old at most
    keyframe_within_s: float = 300.0


def _parse_element(
    where: str, raw: dict | None, columns: list[ColumnSpec], keys: tuple
) -> ElementSpec | None:
    """The ``per_element`` table of a wide table, checked against its columns (None if absent)."""
    lists = [c.name for c in columns if c.list]
    if raw is None:
        if lists:
            raise CatalogueError(f"{where}: list columns {lists} need a 'per_element' table")
        return None
    if not {"key", "view", "help"} <= set(raw) <= {"key", "view", "help", "keyframe_within_s"}:
        raise CatalogueError(f"{where}: per_element needs key, view and help (and may set keyframe_within_s)")
    key = next((c for c in columns if c.name == raw["key"]), None)
    if key is None or not key.list or key.kind != "label":
        raise CatalogueError(f"{where}: per_element key {raw['key']!r} is not a list label column")
    if raw["key"] in keys:
        raise CatalogueError(f"{where}: per_element key {raw['key']!r} is a list, not one of the row's keys")
    return ElementSpec(raw["key"], raw["view"], raw["help"], float(raw.get("keyframe_within_s", 300.0)))


@dataclass(frozen=True)
class ViewSpec:
    """A named query over the tables that every reader shares (declared in the catalogue data)."""

    name: str
    help: str
    sql: str
    source: str

    def ddl(self) -> str:
        """CREATE OR REPLACE VIEW for the store."""
        return f'CREATE OR REPLACE VIEW "{self.name}" AS {self.sql}'


@dataclass(frozen=True)
class Catalogue:
    """All tables, by name, and the shared views over them."""

    tables: dict[str, TableSpec]
    views: dict[str, ViewSpec] = field(default_factory=dict)
    #: per-element views of wide tables, by view name: their shape as scalar columns
    element_views: dict[str, TableSpec] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.tables

    def __getitem__(self, name: str) -> TableSpec:
        return self.tables[name]

    def __iter__(self):
        return iter(self.tables.values())

    @classmethod
    def from_dir(cls, directory: Path = TABLES_DIR) -> Catalogue:
        """Load every ``*.toml`` file in a directory."""
        tables: dict[str, TableSpec] = {}
        views: dict[str, ViewSpec] = {}
        for path in sorted(Path(directory).glob("*.toml")):
            try:
                doc = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise CatalogueError(f"{path.name}: {exc}") from exc
            for name, raw in doc.get("tables", {}).items():
                if name in tables:
                    raise CatalogueError(
                        f"{path.name}: table {name!r} also declared in {tables[name].source}"
                    )
                tables[name] = _parse_table(path.name, name, raw)
                rolled_of = tables[name].element_spec() or tables[name]  # a wide table: per element
                if rolled_of.rollup:
                    from c4.catalogue.rollup import rollup_specs  # lazy: a cycle (rollup builds on TableSpec)

                    for rolled in rollup_specs(rolled_of):
                        if rolled.name in tables:
                            raise CatalogueError(f"{path.name}: rollup {rolled.name!r} clashes with a table")
                        tables[rolled.name] = rolled
            for name, raw in doc.get("views", {}).items():
                if name in tables or name in views or set(raw) != {"help", "sql"}:
                    raise CatalogueError(f"{path.name}: view {name!r}: a new name with help and sql only")
                views[name] = ViewSpec(name, raw["help"], raw["sql"].strip(), path.name)
        element_views: dict[str, TableSpec] = {}
        for spec in tables.values():
            shape = spec.element_spec()
            if shape is None:
                continue
            if shape.name in tables or shape.name in views or shape.name in element_views:
                raise CatalogueError(
                    f"{spec.source}: per-element view {shape.name!r} of {spec.name!r} is taken"
                )
            element_views[shape.name] = shape
        return cls(tables, views, element_views)

    def shape(self, name: str) -> TableSpec:
        """The rows a reader sees under ``name``: a table's spec, or a wide table's per-element view's."""
        if name in self.element_views:
            return self.element_views[name]
        return self.tables[name]

    def row_shapes(self) -> list[TableSpec]:
        """What readers see: every table with scalar columns, wide tables by their per-element view."""
        out = [t for t in self.tables.values() if t.element is None]
        return out + list(self.element_views.values())

    def docs_markdown(self) -> str:
        """The schema reference (docs/schema.md), generated from the catalogue."""
        out = [
            "# C4 table schema",
            "",
            "Generated from `c4/catalogue/tables/*.toml` by `c4 catalogue docs`; do not edit by hand.",
            "Counters are stored raw; each table with counters has a `<table>_rate` view with",
            "per-second rates that treats a decrease as a reset (or a wrap, for fixed-width counters).",
            "",
        ]
        for t in sorted(self.tables.values(), key=lambda t: (t.source, t.name)):
            out += [f"## `{t.name}` (v{t.version}, {t.source}, written by {t.writer})", "", t.help, ""]
            if t.keys:
                out += [f"Entity key: {', '.join(f'`{k}`' for k in t.keys)}.", ""]
            if t.element is not None:
                out += [
                    f"Wide: one row per {', '.join(t.keys)} per tick, LIST columns with one element per "
                    f"`{t.element.key}`; read it as the view `{t.element.view}` (one row per element, a "
                    f"`{t.element.view}_rate` view beside it). An on-change counter is sent when it moves "
                    f"and on keyframes (at least every {t.element.keyframe_within_s:g} s); a NULL list means unchanged "
                    "since the last row that carried it.",
                    "",
                ]
            out += ["| column | type | unit | kind | meaning |", "|---|---|---|---|---|"]
            for c in t.columns:
                kind = c.kind + (f" (wraps at 2^{c.wrap_bits})" if c.wrap_bits else "")
                kind += ", on change" if c.on_change else ""
                out.append(f"| `{c.name}` | {c.sql_type} | {c.unit} | {kind} | {c.help} |")
            out.append("")
        for t in sorted(self.element_views.values(), key=lambda t: t.name):
            out += [f"## view `{t.name}` (per element of `{t.stored_in}`)", "", t.help, ""]
            out += [f"Entity key: {', '.join(f'`{k}`' for k in t.keys)}.", ""]
        for v in sorted(self.views.values(), key=lambda v: v.name):
            out += [f"## view `{v.name}` ({v.source})", "", v.help, "", "```sql", v.sql, "```", ""]
        return "\n".join(out)


@functools.cache
def load() -> Catalogue:
    """The catalogue shipped with this package (cached)."""
    return Catalogue.from_dir(TABLES_DIR)
