"""The scripted context offers nothing Durable's does not: same names, same parameters."""
from __future__ import annotations

import inspect

import azure.durable_functions as df
from durable_fake import FakeContext


def test_fake_context_matches_the_sdk():
    offered = [n for n, v in vars(FakeContext).items() if not n.startswith("_") and n not in ("advance", "replaying", "status")]
    for name in offered:
        real = getattr(df.DurableOrchestrationContext, name, None)
        assert real is not None, f"DurableOrchestrationContext has no {name}"
        if callable(real):
            assert list(inspect.signature(getattr(FakeContext, name)).parameters) == \
                list(inspect.signature(real).parameters), name
        else:
            assert isinstance(real, property) and isinstance(getattr(FakeContext, name), property), name
