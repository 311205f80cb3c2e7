"""What a silo-side update transform is: an update in, an update out, and a record of itself.

An ``Update`` is the model a silo trained, on its way to the outbox: its arrays, its payload kind and
its history. The kind says what the arrays are — ``weights`` (the trained model), ``delta`` (trained
minus the global model the silo started from), ``masked`` (secure aggregation's masked values, which
the server can only sum) — and each transform says which kinds it accepts. The history lists, in the
order they ran, every step that shaped the update: the training hooks (FedProx's proximal term) and
the transforms, each with its name, the options it ran with, and what it observed that the report
needs (``clip``: whether it clipped). It travels in the update's safetensors metadata, so the
orchestrator can check it against what the run requires before it aggregates.

Transforms are pure: numpy in, numpy out, no I/O, no clock; the same inputs give the same bytes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fedfunc.validation import describe

Payload = Literal["weights", "delta", "masked"]
PAYLOADS: tuple[Payload, ...] = ("weights", "delta", "masked")


class TransformError(ValueError):
    """A transform that cannot run as configured (unknown, bad options, wrong payload kind); names it."""


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Step:
    """One entry of an update's history: a transform or training hook, its options, what it observed."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    observed: Mapping[str, Any] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), **({"observed": dict(self.observed)}
                                                                      if self.observed else {})}


@dataclass(frozen=True)
class Update:
    """A silo's update between training and packaging. ``base`` is the global model training started
    from (what ``delta`` subtracts and ``clip`` measures against); never sent."""

    arrays: Mapping[str, np.ndarray]
    base: Mapping[str, np.ndarray]
    kind: Payload = "weights"
    history: tuple[Step, ...] = ()

    def then(self, step: Step, **changes: Any) -> Update:
        return replace(self, history=(*self.history, step), **changes)


class Transform:
    """Subclass: set ``name``, ``Options``, ``accepts`` and define ``apply``."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    accepts: ClassVar[frozenset[Payload]] = frozenset({"weights", "delta"})

    def __init__(self, options: Mapping[str, Any] | None = None):
        try:
            self.options = self.Options.model_validate(dict(options or {}))
        except ValidationError as e:
            raise TransformError(f"transform {self.name}: {describe(e)}") from None

    def step(self, **observed: Any) -> Step:
        return Step(self.name, self.options.model_dump(mode="json"), observed)

    def output_kind(self, kind: Payload) -> Payload:
        """The payload kind this transform produces from ``kind`` (default: unchanged)."""
        if kind not in self.accepts:
            raise TransformError(f"transform {self.name} takes a {' or '.join(sorted(self.accepts))} payload, "
                                 f"not {kind}")
        return kind

    def __call__(self, update: Update) -> Update:
        self.output_kind(update.kind)
        return self.apply(update)

    def apply(self, update: Update) -> Update:
        raise NotImplementedError


def float_names(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The floating tensors, in name order: what transforms change (integer buffers are counters)."""
    return sorted(k for k, a in arrays.items() if np.asarray(a).dtype.kind == "f")
