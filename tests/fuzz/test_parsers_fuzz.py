"""Property-based fuzzing of every parser that takes outside input, on a fixed, derandomized budget
(``bench/fuzz.py`` runs a longer, random one): each accepts or refuses with its own error, nothing else."""
from __future__ import annotations

import pytest

from tests.fuzz.targets import TARGETS, fuzz

EXAMPLES = 120


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_accepts_or_refuses_cleanly(target):
    counts = fuzz(target, EXAMPLES, derandomize=True)
    assert sum(counts.values()) >= EXAMPLES // 2, counts  # hypothesis ran the budget (minus rejected draws)
