"""Facts of a small run, as the orchestrations make them, and the orchestrator's storage on Azurite."""
from __future__ import annotations

from datetime import timedelta

import pytest
from observe_facts import T0, model, round_result

from fedfunc import protocol as p
from fedfunc.coordinator.store import RunStore
from fedfunc.spec import RunSpec
from fedfunc.storage import blob_service, table_service


@pytest.fixture
def spec() -> RunSpec:
    return RunSpec(task="digits", silos=["site-1", "site-2"], rounds=2, strategy="fedavg", bundle="c" * 64)


@pytest.fixture
def run_facts(spec):
    """RunStarted, two rounds (the second with a rejected update), RunCompleted."""
    def make(run: str = "run-a") -> list[p.RunFact]:
        rounds = [round_result(0), round_result(1, rejected="site-3")]
        return [p.RunFact(kind="RunStarted", run_id=run, at=T0, spec=spec),
                *[p.RunFact(kind="RoundCompleted", run_id=run, at=r.ended, result=r) for r in rounds],
                p.RunFact(kind="RunCompleted", run_id=run, at=T0 + timedelta(seconds=30), rounds_completed=2,
                          metrics=rounds[-1].metrics, model=model(2, run),
                          report={"json": f"runs/{run}/report.json", "png": f"runs/{run}/report.png"})]
    return make


@pytest.fixture(scope="session")
def store(azurite) -> RunStore:
    return RunStore(blob_service(azurite.orchestrator.connection_string))


@pytest.fixture(scope="session")
def tables(azurite):
    return table_service(azurite.orchestrator.connection_string)
