"""Wrappers: a strategy around a strategy (Flower's style), for behaviour that composes with any rule
— norm clipping now, differential privacy and secure aggregation next.

A wrapper delegates everything it does not change to the strategy inside it. Its ``describe()``
lists it under ``wrappers`` (innermost first), which is also how the run spec names it and how the
state blob records who wrote it. A wrapper with state of its own keeps it under ``"{name}/..."``.
"""
from __future__ import annotations

from typing import Any

from fedfunc.aggregation.base import Options, Strategy


class StrategyWrapper(Strategy):
    def __init__(self, inner: Strategy, options: Options | dict | None = None, **kwargs: Any):
        super().__init__(options, **kwargs)
        self.inner = inner

    def describe(self) -> dict[str, Any]:
        inner = self.inner.describe()
        own = {"name": self.name, "options": self.options.model_dump(mode="json")}
        return {**inner, "wrappers": [*inner.get("wrappers", []), own]}

    @property
    def stateful(self) -> bool:
        return self.inner.stateful

    @property
    def needs_individual_updates(self) -> bool:
        return self.inner.needs_individual_updates

    @property
    def requires_silo_config(self) -> frozenset[str]:
        return self.inner.requires_silo_config

    def min_updates(self):
        return self.inner.min_updates()

    def check_count(self, n):
        self.inner.check_count(n)

    def configure_round(self, round_, hyperparams):
        return self.inner.configure_round(round_, hyperparams)

    def initial_state(self, global_arrays):
        return self.inner.initial_state(global_arrays)

    def check_state(self, state, global_arrays):
        self.inner.check_state(state, global_arrays)
