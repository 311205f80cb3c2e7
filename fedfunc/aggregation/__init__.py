"""Aggregation strategies: how the orchestrator turns silo updates into the next global model.

``StrategySpec`` (what a run spec says) ``.build()`` gives a ``Strategy``; a round calls
``strategy.aggregate_round(global_arrays, updates, state)`` with the round's updates as a
re-readable source (``sources``) and the previous round's state (``state.decode_state``), and stores
the returned state (``state.encode_state``). ``get_strategy(name).aggregate(global, updates)`` is
the older streaming FedAvg entry point over a one-pass iterable.
"""
from fedfunc.aggregation.base import (Aggregation, ClientUpdate, Options, Strategy, StrategyOptionError,
                                      TooFewUpdates)
from fedfunc.aggregation.clipping import FixedClipping
from fedfunc.aggregation.fedavg import FedAvg
from fedfunc.aggregation.fedavgm import FedAvgM
from fedfunc.aggregation.fedopt import FedAdagrad, FedAdam, FedYogi
from fedfunc.aggregation.fedprox import FedProx
from fedfunc.aggregation.krum import Krum
from fedfunc.aggregation.median import Median
from fedfunc.aggregation.registry import STRATEGIES, WRAPPERS, UnknownStrategy, get_strategy
from fedfunc.aggregation.sources import BlockUpdate, MemoryUpdate, RangeUpdate
from fedfunc.aggregation.spec import StrategySpec, WrapperSpec
from fedfunc.aggregation.state import State, StateCorrupt, StateError, StateMissing, decode_state, encode_state
from fedfunc.aggregation.trimmed_mean import TrimmedMean
from fedfunc.aggregation.wrapper import StrategyWrapper

__all__ = ["Aggregation", "BlockUpdate", "ClientUpdate", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedProx",
           "FedYogi", "FixedClipping", "Krum", "Median", "MemoryUpdate", "Options", "RangeUpdate", "STRATEGIES",
           "State", "StateCorrupt", "StateError", "StateMissing", "Strategy", "StrategyOptionError",
           "StrategySpec", "StrategyWrapper", "TooFewUpdates", "TrimmedMean", "UnknownStrategy", "WRAPPERS",
           "WrapperSpec", "decode_state", "encode_state", "get_strategy"]
