"""Every artifact of the corpus, read by its sampler: every expected fact holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from c4.bench.conformance import check_artifact, corpus

CORPUS = Path(__file__).parent


@pytest.mark.parametrize("folder", corpus(CORPUS), ids=lambda p: str(p.relative_to(CORPUS)))
def test_artifact(folder):
    result = check_artifact(folder)
    assert not result.failures, f"{result.facts_ok}/{result.facts} facts hold:\n" + "\n".join(result.failures)
