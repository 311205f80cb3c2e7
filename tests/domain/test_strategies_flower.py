"""Golden tests: our strategies against Flower 1.42's on identical float32 inputs, several rounds,
state carried across rounds through its bytes. Fixtures: ``bench/flower_golden.py`` (run in
Flower's own venv) wrote ``tests/fixtures/flower/``; each names the Flower class and our spec."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedfunc.aggregation import MemoryUpdate, StrategySpec, decode_state, encode_state
from fedfunc.weights import decode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flower"
CASES = sorted(p.stem for p in FIXTURES.glob("*.safetensors") if p.stem != "inputs")


def load_inputs():
    tensors, meta = decode((FIXTURES / "inputs.safetensors").read_bytes())
    samples = json.loads(meta["samples"])
    names = sorted(k.split("/", 1)[1] for k in tensors if k.startswith("initial/"))
    initial = {k: tensors[f"initial/{k}"] for k in names}
    rounds = [[MemoryUpdate(f"silo{i}", n, {k: tensors[f"r{r}/silo{i}/{k}"] for k in names})
               for i, n in enumerate(round_samples)] for r, round_samples in enumerate(samples, start=1)]
    return initial, rounds, meta


def test_fixtures_cover_the_strategies_the_issue_names():
    assert {"fedadam", "fedadam_legacy", "fedyogi", "fedavgm", "trimmed_mean", "median", "krum"} <= set(CASES)
    assert load_inputs()[2]["flwr"].startswith("1.42.")


@pytest.mark.parametrize("case", CASES)
def test_matches_flower_round_after_round(case):
    initial, rounds, _ = load_inputs()
    expected, meta = decode((FIXTURES / f"{case}.safetensors").read_bytes())
    strategy = StrategySpec.model_validate(json.loads(meta["ours"])).build()
    blob = encode_state(strategy.initial_state(initial), strategy.describe())
    current = initial
    for r, updates in enumerate(rounds, start=1):
        result = strategy.aggregate_round(current, updates, decode_state(blob, strategy.describe()))
        for k, ours in result.arrays.items():
            theirs = expected[f"r{r}/{k}"]
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max(),
                                       err_msg=f"{case} round {r} tensor {k} vs {meta['flower']}")
        blob = encode_state(result.state, strategy.describe())
        current = result.arrays
