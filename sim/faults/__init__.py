"""Fault kinds, one module each: how a kind changes the twin, what its node shows, and its ground truth.

A new kind is one new module in this folder: a ``FaultKind`` subclass from ``kind.py`` and
``KIND = ThatClass()``. A scenario YAML then names it as ``kind: <module name>``. Kinds whose
expected class is ``none`` are negatives: C4D must raise nothing for them.
"""

from __future__ import annotations

import importlib
import pkgutil

from c4.sim.faults.kind import Fault, FaultKind

__all__ = ["FAULT_KINDS", "Fault", "FaultKind"]

#: Modules of this folder that hold no kind.
_NOT_KINDS = {"kind"}

#: The registry: kind name (its module's name) -> what the kind does.
FAULT_KINDS: dict[str, FaultKind] = {
    info.name: importlib.import_module(f"{__name__}.{info.name}").KIND
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
    if info.name not in _NOT_KINDS
}
