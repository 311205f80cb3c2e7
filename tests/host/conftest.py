"""Fixtures: the host's own feature app, run by `fedfunc host` in a subprocess."""
from __future__ import annotations

import pytest
from host_helpers import APPS, FUNCTION_KEY, MASTER_KEY, features_env

from fedfunc.host.testing import HostProcess


@pytest.fixture(scope="session")
def features(tmp_path_factory, azurite):
    """One feature-app host for the session: master and function keys from settings, the other keys
    generated. Its storage watcher learns of writes only from Azurite's access log (the safety poll is
    an hour), so every storage event test here also tests that path."""
    root = tmp_path_factory.mktemp("features")
    (root / "out").mkdir()
    env = features_env(root / "out", azurite, FEDFUNC_HOST_FUNCTION_KEY=FUNCTION_KEY, FEDFUNC_HOST_MASTER_KEY=MASTER_KEY)
    with HostProcess(APPS / "features", root / "state.sqlite", env=env, args=("--storage-log", str(azurite.log_path), "--poll-interval", "3600")) as host:
        host.out = root / "out"
        yield host
