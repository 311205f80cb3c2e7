"""FedProx's proximal term (Li et al., MLSys 2020), a hook of the platform's training loop.

Each silo minimises its loss + μ/2·‖w − w_global‖² over the trainable parameters, where w_global is a
*copy* of the parameters taken before the first step. Two bugs other code bases have, both tested: the
square dropped (μ/2·‖w − w_global‖ has a gradient of constant size that never vanishes near w_global),
and w_global aliasing the live parameters (the term is then 0 and FedProx silently becomes FedAvg).
μ is signed in the bundle (``SiloSide.proximal_mu``); the hook records ``proximal(mu)`` in the update's
history, which the orchestrator checks for a FedProx run.
"""
from __future__ import annotations

import torch

from fedfunc.pipeline.base import Step
from fedfunc.pipeline.history import PROXIMAL


class ProximalTerm:
    name = PROXIMAL

    def __init__(self, mu: float):
        if not mu > 0:
            raise ValueError(f"proximal_mu must be > 0, got {mu}")
        self.mu = float(mu)
        self._anchor: list[torch.Tensor] | None = None

    def wrap(self, model: torch.nn.Module, optimizer, loader):
        """Take the copy of the global weights (the model holds them before the first step)."""
        self._anchor = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        return model, optimizer, loader

    def term(self, model: torch.nn.Module) -> torch.Tensor:
        """μ/2·‖w − w_global‖² over the trainable parameters."""
        if self._anchor is None:
            raise RuntimeError("ProximalTerm.wrap must run before training (it copies the global weights)")
        params = [p for p in model.parameters() if p.requires_grad]
        return self.mu / 2 * sum(torch.sum((p - a) ** 2) for p, a in zip(params, self._anchor, strict=True))

    def loss(self, loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
        return loss + self.term(model)

    def step(self) -> Step:
        return Step(PROXIMAL, {"mu": self.mu})
