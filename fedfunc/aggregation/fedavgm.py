"""FedAvgM (Hsu et al. 2019): FedAvg's mean as a pseudo-gradient, applied with server momentum.

As Flower's ``FedAvgM`` (1.42, PyTorch's SGD convention): ``d = global − mean``,
``momentum = server_momentum · momentum + d`` (the first round's momentum is ``d``, as starting from
zero gives), ``new = global − server_learning_rate · momentum``. With ``server_momentum = 0`` and
``server_learning_rate = 1`` it is FedAvg. State (``moments``): the momentum, none when
``server_momentum`` is 0. Integer buffers take the plain mean.
Works under secure aggregation (it needs only the weighted sum).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from fedfunc.aggregation import moments
from fedfunc.aggregation.base import Options
from fedfunc.aggregation.fedavg import FedAvg


class FedAvgMOptions(Options):
    server_learning_rate: float = Field(1.0, gt=0, description="server step size on the pseudo-gradient")
    server_momentum: float = Field(0.0, ge=0, lt=1, description="momentum factor (0 = none)")


class FedAvgM(FedAvg):
    name = "fedavgm"
    Options = FedAvgMOptions

    @property
    def stateful(self) -> bool:
        return self.options.server_momentum > 0

    def _moments(self) -> tuple[str, ...]:
        return ("momentum",) if self.stateful else ()

    def initial_state(self, global_arrays):
        return moments.initial(self._moments())

    def check_state(self, state, global_arrays):
        moments.check(self.name, state, global_arrays, self._moments())

    def _next_state(self, global_arrays, state):
        return moments.fresh(global_arrays, self._moments(), int(state.scalars.get("step", 0)) + 1)

    def _step(self, name, start, stop, mean, g, state, new_state):
        pseudo_gradient = np.subtract(g, mean, dtype=np.float64)
        if self.stateful:
            previous = moments.block(state, "momentum", name, start, stop)
            if previous is not None:
                pseudo_gradient += self.options.server_momentum * previous
            moments.put(new_state, "momentum", name, start, pseudo_gradient)
        np.subtract(g, self.options.server_learning_rate * pseudo_gradient, out=mean)
