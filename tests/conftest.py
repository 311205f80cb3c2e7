"""Shared fixtures: one real Azurite for the whole test session."""
from __future__ import annotations

import pytest

from fedfunc.azurite import Azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    with Azurite(tmp_path_factory.mktemp("azurite")) as az:
        yield az
