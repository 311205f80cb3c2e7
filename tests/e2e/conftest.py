"""One running system for the end-to-end tests: Azurite + the Function App on ``fedfunc host`` + 3 silos.

The stack's bundle bound is small (``FEDFUNC_MAX_BUNDLE_MB``), so the bound is exercised without
megabytes of upload."""
from __future__ import annotations

import pytest

from fedfunc.devstack import DevStack
from fedfunc.tasks.builtin.datasets import silo_parts

SILOS = ("site-1", "site-2", "site-3")
HYPERPARAMS = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}
MAX_BUNDLE_MB = 2


@pytest.fixture(scope="session")
def digits():
    """Each silo's share of digits (train and test parts), as ``fedfunc silo upload --builtin-part i/3`` makes it."""
    return silo_parts("digits", len(SILOS), alpha=None, seed=0)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, digits):
    with DevStack(tmp_path_factory.mktemp("stack"), extra_settings={"FEDFUNC_MAX_BUNDLE_MB": str(MAX_BUNDLE_MB)}) as s:
        for silo, part in zip(SILOS, digits):
            s.add_silo(silo)
            s.upload_data(silo, part.files("digits"))
        yield s


@pytest.fixture(scope="session")
def bundle(stack):
    """The hash of the signed digits bundle, uploaded through the API."""
    return stack.bundle("digits", HYPERPARAMS)


@pytest.fixture
def spec(bundle):
    """A run spec over the three silos, one round unless overridden."""
    def make(**overrides) -> dict:
        return {"bundle": bundle, "silos": list(SILOS), "rounds": 1, "round_deadline_s": 120, **overrides}
    return make
