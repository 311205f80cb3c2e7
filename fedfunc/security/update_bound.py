"""The bound on every update, ‖update − global‖₂, and the round-relative rule a spec may add.

Every run has a bound, so one silo cannot wreck the global model by sending weights far from it (e.g. a
large constant added to every weight). Where it comes from, in order:

- the signed bundle's clip norm (``fedfunc.pipeline``): what every silo clips its update to (the silo-side
  half, which also holds when the orchestrator cannot see individual updates — secure aggregation, DP).
  ``fedfunc sign`` sets it to the default below unless the signer chooses one or turns clipping off;
- the spec's ``max_update_norm``: a tighter bound (the smaller of the two applies);
- otherwise a default derived from the model: ``DEFAULT_MULTIPLE`` × ‖initial model‖₂ over its float
  tensors, at least ``FLOOR_RMS`` × √(number of float parameters). No honest local training step moves a
  model by ten times the size of the model a run starts from; ``bench/update_bound.py`` prints honest
  update norms against this default per task and hyper-parameters, and what attacks it stops. The floor
  keeps a zero-initialised model boundable.

Where individual updates are visible, ``max_update_norm_vs_median`` in the spec adds a rule relative to
the round's own norms: an update above k × the round's lower median norm is rejected (``norm.median``).
The lower median of the updates that passed every other rule is used, so with two updates the larger
is measured against the smaller; with one update the rule cannot apply.

Pure domain code: numbers in, verdicts out; ``fedfunc.coordinator.rounds`` applies them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

from fedfunc.contracts import Message

DEFAULT_MULTIPLE = 10.0
FLOOR_RMS = 0.1


class UpdateBound(Message):
    """The bound a run holds every update to, and where it came from (for the report and rejections)."""

    max_norm: float
    source: Literal["bundle", "spec", "default"]
    how: str

    def describe(self) -> str:
        return f"bound {self.max_norm:.6g} from the {self.source} ({self.how})"


def float_norm(arrays: Mapping[str, np.ndarray]) -> tuple[float, int]:
    """(‖arrays‖₂, number of elements) over the float tensors (integer buffers are counters, not weights)."""
    sq, n = 0.0, 0
    for a in arrays.values():
        if np.asarray(a).dtype.kind == "f":
            flat = np.asarray(a, dtype=np.float64).reshape(-1)
            sq += float(np.dot(flat, flat))
            n += flat.size
    return math.sqrt(sq), n


def default_bound(initial: Mapping[str, np.ndarray]) -> UpdateBound:
    """The bound when neither the bundle nor the spec sets one, from the run's initial model."""
    norm, n = float_norm(initial)
    floor = FLOOR_RMS * math.sqrt(n)
    value = max(DEFAULT_MULTIPLE * norm, floor)
    how = (f"default: {DEFAULT_MULTIPLE:g} × ‖initial model‖₂ = {DEFAULT_MULTIPLE:g} × {norm:.4g}"
           if value > floor else f"default: {FLOOR_RMS:g} × √{n} parameters (the initial model is near zero)")
    return UpdateBound(max_norm=value, source="default", how=how)


def resolve_bound(spec_max_norm: float | None, signed_clip_norm: float | None,
                  initial: Mapping[str, np.ndarray]) -> UpdateBound:
    """The run's bound: the tighter of the bundle's signed clip norm and the spec's, else the default from
    the model."""
    if signed_clip_norm is not None and (spec_max_norm is None or signed_clip_norm <= spec_max_norm):
        return UpdateBound(max_norm=signed_clip_norm, source="bundle", how="the signed clip norm")
    if spec_max_norm is not None:
        return UpdateBound(max_norm=spec_max_norm, source="spec", how="spec max_update_norm")
    return default_bound(initial)


def lower_median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def above_median(norms: Mapping[str, float], multiple: float) -> dict[str, str]:
    """Silo → reason, for each norm above ``multiple`` × the lower median of ``norms`` (rule ``norm.median``)."""
    if len(norms) < 2:
        return {}
    median = lower_median(list(norms.values()))
    limit = multiple * median
    return {silo: (f"norm.median: ‖update − global‖₂ = {norm:.6g} exceeds {multiple:g} × the round's median "
                   f"norm {median:.6g} = {limit:.6g} (spec max_update_norm_vs_median)")
            for silo, norm in sorted(norms.items()) if norm > limit}
