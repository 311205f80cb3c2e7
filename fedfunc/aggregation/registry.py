"""Strategies and wrappers by name, as a run spec names them: one line each."""
from __future__ import annotations

from typing import Any

from fedfunc.aggregation.base import Strategy
from fedfunc.aggregation.clipping import FixedClipping
from fedfunc.aggregation.fedavg import FedAvg
from fedfunc.aggregation.fedavgm import FedAvgM
from fedfunc.aggregation.fedopt import FedAdagrad, FedAdam, FedYogi
from fedfunc.aggregation.fedprox import FedProx
from fedfunc.aggregation.krum import Krum
from fedfunc.aggregation.median import Median
from fedfunc.aggregation.trimmed_mean import TrimmedMean
from fedfunc.aggregation.wrapper import StrategyWrapper
from fedfunc.validation import UnknownName

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (
    FedAvg,
    FedAvgM,
    FedAdam,
    FedYogi,
    FedAdagrad,
    FedProx,
    TrimmedMean,
    Median,
    Krum,
)}

WRAPPERS: dict[str, type[StrategyWrapper]] = {cls.name: cls for cls in (
    FixedClipping,
)}


class UnknownStrategy(UnknownName):
    def __init__(self, name: str, kind: str = "aggregation strategy", known: dict | None = None):
        super().__init__(name, f"unknown {kind} {name!r}; known: {sorted(STRATEGIES if known is None else known)}")


def get_strategy(name: str, **options: Any) -> Strategy:
    """Instantiate the strategy registered under ``name`` (case-insensitive) with ``options``."""
    cls = STRATEGIES.get(name.lower())
    if cls is None:
        raise UnknownStrategy(name)
    return cls(**options)


def get_wrapper(name: str) -> type[StrategyWrapper]:
    cls = WRAPPERS.get(name.lower())
    if cls is None:
        raise UnknownStrategy(name, "strategy wrapper", WRAPPERS)
    return cls
