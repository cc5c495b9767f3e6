"""NCCL RAS JSON status report (``SET FORMAT json``, NCCL >= 2.28.7) -> nccl_ras_status rows.

The layout is NCCL's own, from ``jsonWriteHeader`` .. ``jsonWriteFooter`` in src/ras/client_support.cc
(identical in v2.28.7 .. v2.30.7 but for one missing comma, see ``repair_2_28``): a header
(``nccl_version``, ``timestamp``, ``communicators_count``), ``communicators`` with ``hash``,
``secondary_hash``, ``size``, ``ranks`` (``rank``, ``host``, ``pid``, ``cuda_dev``, ``nvml_dev``,
``status`` {``init_state``, ``async_error``, ``finalize_called``, ``destroy_flag``, ``abort_flag``},
``collective_counts`` {op: count}) and ``missing_ranks`` (``rank``, ``host``, ``pid``, ``cuda_dev``,
``nvml_dev``, ``status`` {``unresponsive``, ``considered_dead``}), then ``ras`` {``collection_time_sec``,
``timeouts_count``}. The analysis (status, errors, outliers) is left to the reader; it is done here
the way NCCL's text report does it (``rasClientRunComms``): a missing rank whose process did not answer
(``unresponsive``) makes the communicator INCOMPLETE; one whose process answered without knowing the
communicator (during init or teardown) is NOCOMM, a MISMATCH, and not listed in ``missing_ranks``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

#: ncclResult_t values, named as NCCL's RAS text report names them (ncclErrorToString).
NCCL_RESULTS = {
    1: "Unhandled CUDA error",
    2: "System error",
    3: "Internal error",
    4: "Invalid argument",
    5: "Invalid usage",
    6: "Remote process error",
    7: "NCCL operation in progress",
}
NCCL_SUCCESS, NCCL_IN_PROGRESS = 0, 7
#: Rank states in NCCL's order of precedence (the communicator shows the highest one any rank has).
STATUS_ORDER = ("NOCOMM", "INIT", "RUNNING", "FINALIZE", "ABORT")
#: v2.28.7 .. v2.28.9 write ``"nvml_dev": %d\n`` with no comma before a missing rank's ``"status"``.
_MISSING_COMMA = re.compile(r'("nvml_dev"\s*:\s*-?\d+)(\s*\n\s*"status"\s*:)')


def repair_2_28(text: str) -> tuple[str, int]:
    """The report with the comma NCCL 2.28.7-2.28.9 leave out after a missing rank's nvml_dev; and how many."""
    return _MISSING_COMMA.subn(r"\1,\2", text)


def normalize_hash(text: Any) -> str:
    """A communicator hash as ``0x`` + lowercase hex without leading zeros (JSON ``0x%lx``, text ``%016lx``)."""
    s = str(text or "").strip().lower()
    try:
        return f"0x{int(s, 16):x}"
    except ValueError:
        return s


def rank_status(st: dict[str, Any]) -> str:
    """A responding rank's state the way NCCL's text report derives it (abort > finalize > running > init)."""
    if st.get("abort_flag"):
        return "ABORT"
    if st.get("finalize_called") or st.get("destroy_flag"):
        return "FINALIZE"
    return "RUNNING" if st.get("init_state") == NCCL_SUCCESS else "INIT"


def rank_errors(st: dict[str, Any]) -> str:
    """NCCL's initialization and asynchronous errors of a rank, named; empty when there are none."""
    out = []
    for key, what in (("init_state", "init"), ("async_error", "async")):
        v = st.get(key)
        if isinstance(v, int) and v not in (NCCL_SUCCESS, NCCL_IN_PROGRESS):
            out.append(f"{what}: {NCCL_RESULTS.get(v, f'error {v}')}")
    return "; ".join(out)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _place(r: dict[str, Any]) -> dict[str, Any]:
    """host, pid and GPU of a rank entry (NCCL writes ``unknown`` and -1 when it has no process info).

    The GPU is ``nvml_dev``, the physical index NVML (and C4's gpu tables) use; ``cuda_dev`` may repeat
    on a node under CUDA_VISIBLE_DEVICES."""
    host = str(r.get("host") or "")
    pid, nvml, cuda = _int(r.get("pid")), _int(r.get("nvml_dev")), _int(r.get("cuda_dev"))
    gpu = nvml if nvml is not None and nvml >= 0 else cuda
    return {
        "host": "" if host == "unknown" else host,
        "pid": pid if pid is not None and pid >= 0 else None,
        "gpu": gpu if gpu is not None and gpu >= 0 else None,
    }


def communicator_rows(c: dict[str, Any], skipped: Counter) -> list[dict[str, Any]]:
    """The communicator's row and one row per rank, responding or missing."""
    comm = normalize_hash(c.get("hash"))
    size = _int(c.get("size"))
    rows: list[dict[str, Any]] = []
    states, errors, counts = set(), False, set()
    for r in c.get("ranks") or []:
        if not isinstance(r, dict) or _int(r.get("rank")) is None:
            skipped["rank_unreadable"] += 1
            continue
        st = r.get("status") if isinstance(r.get("status"), dict) else {}
        ops = r.get("collective_counts") if isinstance(r.get("collective_counts"), dict) else {}
        op_counts = {k: v for k, v in ops.items() if _int(v) is not None and v >= 0}
        status, errs = rank_status(st), rank_errors(st)
        states.add(status)
        errors |= bool(errs)
        counts.add(tuple(sorted(op_counts.items())))
        rows.append(
            {
                "comm_hash": comm,
                "scope": "rank",
                "rank": r["rank"],
                "n_ranks": size,
                "status": status,
                "errors": errs,
                "coll_count": sum(op_counts.values()) if op_counts else None,
                **_place(r),
            }
        )
    missing, dead = [], []
    for r in c.get("missing_ranks") or []:
        if not isinstance(r, dict) or _int(r.get("rank")) is None:
            skipped["rank_unreadable"] += 1
            continue
        st = r.get("status") if isinstance(r.get("status"), dict) else {}
        is_dead = st.get("considered_dead") is True
        if is_dead or st.get("unresponsive") is not False:  # no answer from its process: INCOMPLETE
            missing.append(r["rank"])
        else:  # its process answered but is no member (yet, or any more): NOCOMM, a MISMATCH, no hang
            states.add("NOCOMM")
        if is_dead:
            dead.append(r["rank"])
        status = "DEAD" if is_dead else "UNRESPONSIVE" if st.get("unresponsive") is not False else "NOCOMM"
        rows.append(
            {
                "comm_hash": comm,
                "scope": "rank",
                "rank": r["rank"],
                "n_ranks": size,
                "status": status,
                "errors": "",
                "coll_count": None,
                **_place(r),
            }
        )
    flags = [
        name
        for name, on in (
            ("INCOMPLETE", bool(missing)),
            ("ERROR", errors),
            ("MISMATCH", len(states) > 1 or len(counts) > 1),
        )
        if on
    ]
    top = max(states, key=STATUS_ORDER.index) if states else "NOCOMM"
    rows.insert(
        0,
        {
            "comm_hash": comm,
            "scope": "communicator",
            "rank": None,
            "n_ranks": size,
            "status": top,
            "errors": ",".join(flags) or "OK",
            "coll_count": None,
            "missing_ranks": ",".join(map(str, sorted(missing))),
            "dead_ranks": ",".join(map(str, sorted(dead))),
            "n_missing": len(missing),
            "n_dead": len(dead),
        },
    )
    for r in rows[1:]:
        r.update({"missing_ranks": "", "dead_ranks": "", "n_missing": None, "n_dead": None})
    return rows


def report_rows(report: dict[str, Any], skipped: Counter) -> list[dict[str, Any]]:
    """Rows of every communicator of one JSON report; unreadable entries are counted in ``skipped``."""
    comms = report.get("communicators")
    if not isinstance(comms, list):
        skipped["report_without_communicators"] += 1
        return []
    rows: list[dict[str, Any]] = []
    for c in comms:
        if not isinstance(c, dict) or not c.get("hash"):
            skipped["communicator_unreadable"] += 1
            continue
        try:
            rows += communicator_rows(c, skipped)
        except Exception:  # one odd communicator never loses the others
            skipped["communicator_unreadable"] += 1
    return rows
