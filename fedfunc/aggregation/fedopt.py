"""FedAdam, FedYogi, FedAdagrad (Reddi et al., "Adaptive Federated Optimization", ICLR 2021):
FedAvg's mean minus the global model is a pseudo-gradient ``Δ`` that a server optimizer applies.

Formulas and defaults are Flower 1.42's ``flwr.serverapp.strategy`` ones (golden-tested against it):

    m = β1·m + (1 − β1)·Δ                                   (all three; FedAdagrad has β1 = 0)
    FedAdam:    v = β2·v + (1 − β2)·Δ²
                new = global + η·√(1 − β2^(t+1)) / (1 − β1^(t+1)) · m / (√v + τ)
    FedYogi:    v = v − (1 − β2)·Δ²·sign(v − Δ²);   new = global + η·m / (√v + τ)
    FedAdagrad: v = v + Δ²;                          new = global + η·m / (√v + τ)

``t`` is the optimizer step (1 at the first aggregation, like Flower's server round; a round that
does not aggregate does not count). Flower has two FedAdam classes: the ``flwr.serverapp`` one
(τ = 1e-3, our default) and the legacy ``flwr.server.strategy`` one, identical but for τ = 1e-9 — set
``tau=1e-9`` for it. Both scale η by the bias correction above (with Flower's ``t + 1``);
``bias_correction=false`` gives the paper's plain η. Flower's ``eta_l`` (the silos' learning rate)
is not a server option here: local training takes it from the signed bundle's hyper-parameters.

State (``moments``): m (not for FedAdagrad) and v, float32, per floating tensor. Integer buffers take the plain mean.
Work under secure aggregation (they need only the weighted sum).
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from fedfunc.aggregation import moments
from fedfunc.aggregation.base import Options
from fedfunc.aggregation.fedavg import FedAvg


class FedOptOptions(Options):
    eta: float = Field(0.1, gt=0, description="server learning rate η")
    beta_1: float = Field(0.9, ge=0, lt=1, description="first-moment decay β1")
    beta_2: float = Field(0.99, ge=0, lt=1, description="second-moment decay β2")
    tau: float = Field(1e-3, gt=0, description="adaptivity τ (added to √v)")


class FedAdamOptions(FedOptOptions):
    bias_correction: bool = Field(True, description="scale η by √(1 − β2^(t+1)) / (1 − β1^(t+1)), as Flower")


class FedYogiOptions(FedOptOptions):
    eta: float = Field(0.01, gt=0, description="server learning rate η")


class FedAdagradOptions(Options):
    eta: float = Field(0.1, gt=0, description="server learning rate η")
    tau: float = Field(1e-3, gt=0, description="adaptivity τ (added to √v)")


class _FedOpt(FedAvg):
    stateful = True
    _MOMENTS = ("m", "v")

    def initial_state(self, global_arrays):
        return moments.initial(self._MOMENTS)

    def check_state(self, state, global_arrays):
        moments.check(self.name, state, global_arrays, self._MOMENTS)

    def _next_state(self, global_arrays, state):
        return moments.fresh(global_arrays, self._MOMENTS, int(state.scalars["step"]) + 1)

    def _step(self, name, start, stop, mean, g, state, new_state):
        delta = np.subtract(mean, g, dtype=np.float64)
        beta_1 = getattr(self.options, "beta_1", 0.0)
        m = (1 - beta_1) * delta
        previous_m = moments.block(state, "m", name, start, stop)
        if previous_m is not None:
            m += beta_1 * previous_m
        previous_v = moments.block(state, "v", name, start, stop)
        v = self._second_moment(np.zeros_like(delta) if previous_v is None else previous_v.astype(np.float64),
                                delta * delta)
        if "m" in self._MOMENTS:
            moments.put(new_state, "m", name, start, m)
        moments.put(new_state, "v", name, start, v)
        step = self._step_size(int(new_state.scalars["step"])) * m / (np.sqrt(v) + self.options.tau)
        np.add(g, step, out=mean)

    def _second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step_size(self, t: int) -> float:
        return self.options.eta


class FedAdam(_FedOpt):
    name = "fedadam"
    Options = FedAdamOptions

    def _second_moment(self, v, delta_sq):
        return self.options.beta_2 * v + (1 - self.options.beta_2) * delta_sq

    def _step_size(self, t):
        o = self.options
        if not o.bias_correction:
            return o.eta
        return o.eta * math.sqrt(1 - o.beta_2 ** (t + 1)) / (1 - o.beta_1 ** (t + 1))


class FedYogi(_FedOpt):
    name = "fedyogi"
    Options = FedYogiOptions

    def _second_moment(self, v, delta_sq):
        return v - (1 - self.options.beta_2) * delta_sq * np.sign(v - delta_sq)


class FedAdagrad(_FedOpt):
    name = "fedadagrad"
    Options = FedAdagradOptions
    _MOMENTS = ("v",)  # β1 = 0: m is this round's Δ, nothing to carry

    def _second_moment(self, v, delta_sq):
        return v + delta_sq
