"""The ``fedfunc`` command, registered once per session, invoked in-process."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="session")
def fedfunc():
    """``fedfunc(*args, env=None)`` → click Result."""
    from fedfunc.cli import _register, app

    _register()
    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(app, [str(a) for a in args], env=env)
