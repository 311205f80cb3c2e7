"""One running system for the end-to-end tests: Azurite + the Function App on ``fedfunc host`` + 3 silos."""
from __future__ import annotations

import pytest

from fedfunc.devstack import DevStack
from fedfunc.observe.subscriber import EventSubscriber
from fedfunc.tasks.partition import partition
from fedfunc.tasks.registry import get_task

SILOS = ("site-1", "site-2", "site-3")
HYPERPARAMS = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}


@pytest.fixture(scope="session")
def digits():
    return get_task("digits").load_dataset()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, digits):
    with DevStack(tmp_path_factory.mktemp("stack")) as s:
        for silo, idx in zip(SILOS, partition(digits.y_train, len(SILOS), alpha=None, seed=0)):
            s.add_silo(silo)
            s.upload_data(silo, "digits", digits.x_train[idx], digits.y_train[idx])
        yield s


@pytest.fixture(scope="session")
def subscriber(stack):
    """A local subscriber of the app's domain events (a webhook on its topic), de-duplicating by event id."""
    with EventSubscriber() as sub:
        stack.subscribe_events("e2e-subscriber", sub.url)
        yield sub


@pytest.fixture(scope="session")
def bundle(stack):
    return stack.signed_bundle("digits", HYPERPARAMS)


@pytest.fixture(scope="session")
def basic_run(stack, bundle, subscriber):
    """One finished 2-round run over the three silos (``e2e-basic``), shared by the tests that read one;
    the event subscriber listens from before it starts."""
    run = stack.start_run({"task": "digits", "silos": list(SILOS), "rounds": 2, "round_deadline_s": 120,
                           "bundle": bundle, "run_id": "e2e-basic"})
    return stack.wait_run(run, timeout=300)


@pytest.fixture
def spec(bundle):
    """A run spec over the three silos, one round unless overridden."""
    def make(**overrides) -> dict:
        return {"task": "digits", "silos": list(SILOS), "rounds": 1, "round_deadline_s": 120, "bundle": bundle,
                **overrides}
    return make
