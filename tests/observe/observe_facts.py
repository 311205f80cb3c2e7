"""Facts of a small run, as the orchestrations make them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fedfunc import protocol as p
from fedfunc.contracts import ModelRef

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SHA = "ab" * 32


def model(round_: int, run: str = "run-a") -> ModelRef:
    return ModelRef(path=f"{run}/round-{round_:04d}/global.safetensors", sha256=SHA)


def round_result(r: int, *, rejected: str | None = None) -> p.RoundResult:
    silos = {"site-1": p.SiloOutcome(state="received", num_samples=100, seconds=4.5 + r,
                                     metrics={"loss": 0.5 / (r + 1), "num_samples": 100, "epochs": 1,
                                              "test_accuracy": 0.8 + r / 100}),
             "site-2": p.SiloOutcome(state="failed", reason="data/digits/train.safetensors: bad shape", seconds=1.0)}
    if rejected:
        silos[rejected] = p.SiloOutcome(state="rejected", reason="update.non_finite: tensor 'w' has NaN", seconds=3.0)
    return p.RoundResult(round=r, model=model(r + 1), metrics={"accuracy": 0.9 + r / 100, "loss": 0.3 - r / 100},
                         num_samples=100, silos=silos, started=T0 + timedelta(seconds=10 * r),
                         ended=T0 + timedelta(seconds=10 * r + 7))
