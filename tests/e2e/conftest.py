"""One running system for the end-to-end tests: Azurite + the Function App on ``fedfunc host`` + 3 silos.

The session's silos (``SILOS``) are only read: a test that changes a silo (disables it, cuts it off,
forges its updates, uploads its data) onboards its own with ``own_silo`` and removes it afterwards.
The stack's bundle bound is small (``FEDFUNC_MAX_BUNDLE_MB``), so the bound is exercised without
megabytes of upload.
"""
from __future__ import annotations

import socket

import pytest
from e2e_helpers import HYPERPARAMS, SILOS, CutOff, run_spec

from fedfunc.devstack import DevStack
from fedfunc.observe.subscriber import EventSubscriber
from fedfunc.tasks.builtin.datasets import silo_parts

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
def subscriber(stack):
    """A local subscriber of the app's domain events (a webhook on its topic), de-duplicating by event id."""
    with EventSubscriber() as sub:
        stack.subscribe_events("e2e-subscriber", sub.url)
        yield sub


@pytest.fixture(scope="session")
def bundle(stack):
    """The hash of the signed digits bundle, uploaded through the API."""
    return stack.bundle("digits", HYPERPARAMS)


@pytest.fixture(scope="session")
def basic_run(stack, bundle, subscriber):
    """A completed two-round run over the session's silos (``e2e-basic``), which the tests given it only
    read; the event subscriber listens from before it starts."""
    run = stack.start_run(run_spec(bundle, rounds=2, run_id="e2e-basic"))
    status = stack.wait_run(run, timeout=300)
    assert status["runtime_status"] == "Completed", status
    return status


@pytest.fixture
def spec(bundle):
    """``spec(**overrides)``: ``run_spec`` with this session's signed bundle."""
    return lambda **overrides: run_spec(overrides.pop("bundle", bundle), **overrides)


class OwnSilos:
    """Silos a test onboards on the shared stack for itself; removed (storage released) when it ends."""

    def __init__(self, stack: DevStack, digits):
        self.stack, self.digits, self.made = stack, digits, []

    def __call__(self, name: str, *, data: bool = True) -> str:
        self.made.append(name)
        self.stack.add_silo(name)
        if data:
            self.stack.upload_data(name, self.digits[0].files("digits"))  # a share like the session silos'
        return name

    def remove_all(self) -> None:
        for name in self.made:
            self.stack.api("DELETE", f"/api/silos/{name}", role="admin", expect=(200, 404))


@pytest.fixture
def own_silo(stack, digits):
    silos = OwnSilos(stack, digits)
    yield silos
    silos.remove_all()


@pytest.fixture(scope="module")
def module_silo(stack, digits):
    """``own_silo`` for silos a whole module shares (and only reads)."""
    silos = OwnSilos(stack, digits)
    yield silos
    silos.remove_all()


@pytest.fixture(scope="session")
def refused_port():
    """A port held bound but never listened on: every connection to it is refused while the session runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def cut_off(stack, refused_port):
    """``cut_off(silo)`` on the session stack (see ``CutOff``)."""
    return CutOff(stack, refused_port)
