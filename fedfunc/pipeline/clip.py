"""``clip``: scale the update so that ‖update − global‖₂ ≤ ``max_norm`` (over the floating tensors).

The silo-side half of the bound on every update: it holds even where the orchestrator cannot see
individual updates (secure aggregation, DP), and the orchestrator rejects any visible update above the
same norm. On a ``weights`` payload it scales the update's distance from the global model it trained
from; on a ``delta`` payload, the delta. Records ``clipped`` (true when it scaled), never the norm it
measured: the report says which silos were clipped without the norm, a function of the silo's data.
Integer buffers (counters) are left as they are.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from fedfunc.pipeline.base import Options, Transform, Update, float_names


class ClipOptions(Options):
    max_norm: float = Field(gt=0, allow_inf_nan=False, description="bound on ‖update − global‖₂")


class Clip(Transform):
    name = "clip"
    Options = ClipOptions

    def apply(self, update: Update) -> Update:
        bound = self.options.max_norm
        norm = self.norm(update)
        if norm <= bound:
            return update.then(self.step(clipped=False))
        # Scaled in float64, stored in the tensors' dtype: rounding may land just above the bound, which
        # the orchestrator would reject, so aim a little below it and check what was stored.
        target = bound
        while True:
            target *= 1 - 1e-6
            clipped = update.then(self.step(clipped=True), arrays=self._scaled(update, target / norm))
            if self.norm(clipped) <= bound:
                return clipped

    @staticmethod
    def _moved(update: Update, name: str) -> np.ndarray:
        a = np.asarray(update.arrays[name], np.float64).reshape(-1)
        return a if update.kind == "delta" else a - np.asarray(update.base[name], np.float64).reshape(-1)

    @classmethod
    def norm(cls, update: Update) -> float:
        """‖update − base‖₂ (‖delta‖₂) over the floating tensors, in float64."""
        return math.sqrt(sum(float(np.dot(d, d)) for d in (cls._moved(update, k) for k in float_names(update.arrays))))

    @classmethod
    def _scaled(cls, update: Update, scale: float) -> dict[str, np.ndarray]:
        arrays = dict(update.arrays)
        for k in float_names(update.arrays):
            a = np.asarray(update.arrays[k])
            origin = 0.0 if update.kind == "delta" else np.asarray(update.base[k], np.float64).reshape(-1)
            arrays[k] = (origin + cls._moved(update, k) * scale).astype(a.dtype).reshape(a.shape)
        return arrays
