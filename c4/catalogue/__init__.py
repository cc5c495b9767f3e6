"""The table catalogue: every table, column, type, unit and kind, declared once as data.

Each ``tables/*.toml`` file declares tables of one source. DuckDB DDL, Arrow
schemas, rate views and the schema docs are all generated from it.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

TABLES_DIR = Path(__file__).parent / "tables"

#: DuckDB type -> Arrow type. The only types a catalogue may use.
ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BOOLEAN": pa.bool_(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "UBIGINT": pa.uint64(),
    "DOUBLE": pa.float64(),
    "TIMESTAMP": pa.timestamp("us"),
}

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

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type rows of this column are sent as."""
        return ARROW_TYPES[self.type]


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
    rollup: bool = False  # the collector keeps <name>_1m and <name>_1h rollups of it (catalogue/rollup.py)

    @functools.cached_property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema a batch for this table must have."""
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        """Column names in declaration order."""
        return [c.name for c in self.columns]

    @property
    def counters(self) -> list[ColumnSpec]:
        """The monotonic counter columns."""
        return [c for c in self.columns if c.kind == "counter"]

    def ddl(self) -> str:
        """CREATE TABLE statement for DuckDB."""
        cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in self.columns)
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n  {cols}\n)'

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
        if not counters or not self.time_column:
            return None
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
        "rollup",
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
        if ctype not in ARROW_TYPES:
            raise CatalogueError(f"{where}: column {cname!r} has unknown type {ctype!r}")
        kind = col.get("kind", "")
        if kind not in KINDS:
            raise CatalogueError(f"{where}: column {cname!r} has kind {kind!r}, expected one of {KINDS}")
        if not col.get("help"):
            raise CatalogueError(f"{where}: column {cname!r} has no 'help'")
        columns.append(
            ColumnSpec(cname, ctype, col.get("unit", ""), kind, col["help"], int(col.get("wrap_bits", 0)))
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
        rollup=_rollup_flag(where, raw, columns, keys, time_column),
    )


def _rollup_flag(where: str, raw: dict, columns: list[ColumnSpec], keys: tuple, time_column) -> bool:
    """The table's ``rollup`` declaration, checked: it needs a time column, keys and something to roll up."""
    rollup = raw.get("rollup", False)
    if not isinstance(rollup, bool):
        raise CatalogueError(f"{where}: rollup must be true or false, not {rollup!r}")
    if rollup and (not time_column or not keys or not any(c.kind in ("gauge", "counter") for c in columns)):
        raise CatalogueError(f"{where}: rollup = true needs a time column, keys and a gauge or counter")
    return rollup


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
                if tables[name].rollup:
                    from c4.catalogue.rollup import rollup_specs  # lazy: a cycle (rollup builds on TableSpec)

                    for rolled in rollup_specs(tables[name]):
                        if rolled.name in tables:
                            raise CatalogueError(f"{path.name}: rollup {rolled.name!r} clashes with a table")
                        tables[rolled.name] = rolled
            for name, raw in doc.get("views", {}).items():
                if name in tables or name in views or set(raw) != {"help", "sql"}:
                    raise CatalogueError(f"{path.name}: view {name!r}: a new name with help and sql only")
                views[name] = ViewSpec(name, raw["help"], raw["sql"].strip(), path.name)
        return cls(tables, views)

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
            out += ["| column | type | unit | kind | meaning |", "|---|---|---|---|---|"]
            for c in t.columns:
                kind = c.kind + (f" (wraps at 2^{c.wrap_bits})" if c.wrap_bits else "")
                out.append(f"| `{c.name}` | {c.type} | {c.unit} | {kind} | {c.help} |")
            out.append("")
        for v in sorted(self.views.values(), key=lambda v: v.name):
            out += [f"## view `{v.name}` ({v.source})", "", v.help, "", "```sql", v.sql, "```", ""]
        return "\n".join(out)


@functools.cache
def load() -> Catalogue:
    """The catalogue shipped with this package (cached)."""
    return Catalogue.from_dir(TABLES_DIR)
