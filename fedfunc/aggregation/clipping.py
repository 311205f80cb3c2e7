"""Server-side fixed norm clipping around any strategy: each update becomes
``global + (update − global) · min(1, clipping_norm / ‖update − global‖₂)`` before the inner rule sees
it — Flower's ``DifferentialPrivacyServerSideFixedClipping`` without the noise (the DP wrapper will
add it). Bounds any one silo's influence on the FedAvg family.

Needs each update's norm, so each update in the clear: ``needs_individual_updates = True`` — under
secure aggregation, clip in the silo instead (the silo-side transform chain). Costs one extra
block-wise pass over the updates (their norms), which also applies the value rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from pydantic import Field

from fedfunc.aggregation.base import Aggregation, BlockPass, Options
from fedfunc.aggregation.sources import CheckedUpdate, in_key_order
from fedfunc.aggregation.state import State
from fedfunc.aggregation.wrapper import StrategyWrapper


class FixedClippingOptions(Options):
    clipping_norm: float = Field(gt=0, description="bound on ‖update − global‖₂ after clipping")


class FixedClipping(StrategyWrapper):
    name = "clip"
    Options = FixedClippingOptions
    needs_individual_updates = True

    def aggregate_round(self, global_arrays, updates, state: State | None = None, *, max_norm=None,
                        block_elems=None, readers=0) -> Aggregation:
        ordered = in_key_order(updates)
        norms = BlockPass(global_arrays, ordered, block_elems or self.inner.block_elems, max_norm, measure_all=True,
                          readers=readers)
        for _ in norms():
            pass
        rejected = norms.failures()
        bound = self.options.clipping_norm
        sq = norms.sq_distances()
        clipped = [_Clipped(u, global_arrays, min(1.0, bound / math.sqrt(sq[u.key])) if sq[u.key] > 0 else 1.0)
                   for u in ordered if u.key not in rejected]
        result = self.inner.aggregate_round(global_arrays, clipped, state, block_elems=block_elems, readers=readers)
        return replace(result, rejected={**rejected, **result.rejected})


@dataclass(frozen=True)
class _Clipped(CheckedUpdate):
    global_arrays: dict
    scale: float

    def read(self, tensor: str, start: int, stop: int) -> np.ndarray:
        u = self.inner.read(tensor, start, stop)
        if self.scale == 1.0:
            return u
        g = np.asarray(self.global_arrays[tensor]).reshape(-1)[start:stop]
        clipped = g + (u - g.astype(np.float64)) * self.scale
        return (clipped if u.dtype.kind == "f" else np.rint(clipped)).astype(u.dtype)
