"""Strategies by name, as a run spec names them."""
from __future__ import annotations

from typing import Any

from fedfunc.aggregation.base import Strategy
from fedfunc.aggregation.fedavg import FedAvg
from fedfunc.validation import UnknownName

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg,)}


class UnknownStrategy(UnknownName):
    def __init__(self, name: str):
        super().__init__(name, f"unknown aggregation strategy {name!r}; known: {sorted(STRATEGIES)}")


def get_strategy(name: str, **options: Any) -> Strategy:
    """Instantiate the strategy registered under ``name`` (case-insensitive) with ``options``."""
    cls = STRATEGIES.get(name.lower())
    if cls is None:
        raise UnknownStrategy(name)
    return cls(**options)
