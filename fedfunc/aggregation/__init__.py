"""Aggregation strategies: how the orchestrator turns silo updates into the next global model.

``get_strategy(name)`` is the one entry point; strategies stream updates so the aggregate
activity holds O(model) memory however many silos report.
"""
from fedfunc.aggregation.base import ClientUpdate, Strategy
from fedfunc.aggregation.fedavg import FedAvg
from fedfunc.aggregation.registry import STRATEGIES, UnknownStrategy, get_strategy

__all__ = ["ClientUpdate", "FedAvg", "STRATEGIES", "Strategy", "UnknownStrategy", "get_strategy"]
