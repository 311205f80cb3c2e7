"""The strategy interface (Flower-like hooks) and the update shape strategies consume."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np


class ClientUpdate(Protocol):
    """What a strategy reads from one silo. ``fedfunc.weights.ValidatedUpdate`` satisfies it."""

    @property
    def arrays(self) -> Mapping[str, np.ndarray]: ...

    @property
    def num_samples(self) -> int: ...


class Strategy:
    """Server-side hooks of one federated run.

    ``configure_round`` lets a strategy change the local hyper-parameters sent to silos in a round
    (the default sends them unchanged). ``aggregate`` turns the updates of a round into the next
    global arrays; ``updates`` may be a generator that downloads one update at a time, and a
    strategy must not hold on to more than one.
    """

    name: str = ""

    def configure_round(self, round_: int, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
        return dict(hyperparams)

    def aggregate(self, global_arrays: Mapping[str, np.ndarray],
                  updates: Iterable[ClientUpdate]) -> dict[str, np.ndarray]:
        raise NotImplementedError
