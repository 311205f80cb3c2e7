"""``delta``: send trained − global instead of the trained model.

What secure aggregation and DP noise work on (a sum of deltas; noise scaled to a clipped delta), and
smaller when quantized. Every tensor becomes ``update − base`` in its own dtype (float32 rounding: the
server's ``base + delta`` is the trained value to within one ulp). The server adds the global model
back before its strategy runs, so every strategy accepts a delta payload.
"""
from __future__ import annotations

import numpy as np

from fedfunc.pipeline.base import Payload, Transform, Update


class Delta(Transform):
    name = "delta"
    accepts = frozenset({"weights"})

    def output_kind(self, kind: Payload) -> Payload:
        super().output_kind(kind)
        return "delta"

    def apply(self, update: Update) -> Update:
        arrays = {k: np.asarray(np.subtract(a, update.base[k])).astype(np.asarray(a).dtype)
                  for k, a in update.arrays.items()}
        return update.then(self.step(), arrays=arrays, kind="delta")
