"""Shared fixtures: one real Azurite for the whole test session; the `fedfunc` command in-process."""
from __future__ import annotations

import pytest

from fedfunc.azurite import Azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    with Azurite(tmp_path_factory.mktemp("azurite")) as az:
        yield az


@pytest.fixture(scope="session")
def fedfunc():
    """The ``fedfunc`` command, registered once, invoked in-process: ``fedfunc(*args, env=None)`` → click Result."""
    from typer.testing import CliRunner

    from fedfunc.cli import _register, app

    _register()
    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(app, [str(a) for a in args], env=env, terminal_width=200)
