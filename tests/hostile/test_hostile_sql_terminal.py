"""Hostile: stored text holding terminal escape sequences (a job can print anything into its NCCL log, a
kernel line anything after "NVRM:") is shown escaped by `c4 sql` and `c4 faults`, never run by the
operator's terminal; files and pipes still get the text exactly as stored."""

from __future__ import annotations

import os
import pty
import subprocess
from datetime import UTC, datetime

import pyarrow as pa
from testkit.procs import C4, CollectorProc

from c4.catalogue import load
from c4.push import push_table
from c4.report import format_table, printable_text, terminal_safe

#: A title change, a colour, a one-byte CSI, a bell, a bidi override and a newline.
EVIL = "NVRM: Xid 79 \x1b]0;pwned\x07\x1b[31mred\x9b2J \u202eexe.txt\nnext"


def test_terminal_safe_writes_every_control_as_an_escape():
    shown = terminal_safe(EVIL)
    assert shown == "NVRM: Xid 79 \\x1b]0;pwned\\x07\\x1b[31mred\\x9b2J \\u202eexe.txt\\nnext"
    assert terminal_safe("plain ü 漢字") == "plain ü 漢字"


def test_printable_text_reaches_nested_strings_and_keeps_nulls_and_other_columns():
    table = pa.table(
        {
            "n": pa.array([1, 2, 3]),
            "s": pa.array([EVIL, None, "ok"]),
            "l": pa.array([["a", "\x1b[0m"], None, []], type=pa.list_(pa.string())),
            "st": pa.array([{"x": "\x1b"}, None, {"x": "y"}], type=pa.struct([("x", pa.string())])),
        }
    ).slice(0, 3)
    out = printable_text(table)
    assert out.schema == table.schema
    assert out.column("n").equals(table.column("n"))
    assert out.column("s").to_pylist() == [terminal_safe(EVIL), None, "ok"]
    assert out.column("l").to_pylist() == [["a", "\\x1b[0m"], None, []]
    assert out.column("st").to_pylist() == [{"x": "\\x1b"}, None, {"x": "y"}]
    # a slice past the first row keeps its own rows
    assert printable_text(table.slice(1, 2)).column("l").to_pylist() == [None, []]
    clean = pa.table({"s": ["a", "b"]})
    assert printable_text(clean) is clean
    assert "\x1b" not in format_table([{"message": EVIL}])


def _xid(ts: datetime) -> dict:
    return {
        "ts": ts,
        "node": "evil",
        "job": "",
        "kind": "xid",
        "source": "kmsg",
        "gpu_index": 0,
        "pci_bus_id": "0000:18:00.0",
        "xid": 79,
        "xid_name": "GPU has fallen off the bus",
        "category": "bus",
        "meaning": "the GPU is no longer reachable on PCIe",
        "action": "drain_node",
        "message": EVIL,
    }


def _sql(address: str, fmt: str, tty: bool) -> bytes:
    """`c4 sql` output, with stdout a pipe or a pseudo-terminal."""
    args = [*C4, "sql", "--collector", address, "--format", fmt, "SELECT message FROM gpu_events"]
    if not tty:
        return subprocess.run(args, capture_output=True, timeout=60, check=True).stdout
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(args, stdout=follower, stderr=subprocess.PIPE, timeout=60)
        os.close(follower)
        follower = -1
        assert proc.returncode == 0, proc.stderr
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_c4_sql_escapes_stored_escape_sequences_on_terminals_only(tmp_path):
    col = CollectorProc(tmp_path).start()
    try:
        now = datetime.now(UTC).replace(tzinfo=None)
        push_table(
            col.address,
            "gpu_events",
            pa.Table.from_pylist([_xid(now)], schema=load()["gpu_events"].arrow_schema),
            agent_id="t",
        )
        for fmt, tty in (("table", False), ("table", True), ("csv", True), ("json", True)):
            out = _sql(col.address, fmt, tty)
            assert b"\x1b" not in out and b"\x07" not in out and "\u202e".encode() not in out, (fmt, tty, out)
            assert "\x9b".encode() not in out, (fmt, tty, out)
            assert b"pwned" in out and b"x1b" in out, (fmt, tty, out)
        # a pipe gets the stored bytes: what an operator saves is what the agent sent
        assert EVIL.encode() in _sql(col.address, "csv", False).replace(b'"', b"")
    finally:
        assert col.stop() == 0
