"""How C4 starts another ``c4`` process of its own installation (collector, agents, UI in the demo, sim, bench)."""

from __future__ import annotations

import sys

#: ``python -P -m c4.cli``: -P keeps the working directory off sys.path, so a folder named ``c4`` where the
#: user stands (e.g. the checkout after ``git clone ... c4``) is not imported in place of the installed package.
C4_COMMAND: list[str] = [sys.executable, "-P", "-m", "c4.cli"]
