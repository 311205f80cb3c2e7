"""The silo side of a run, as the signed bundle fixes it and a silo policy adds to it.

``SiloSide`` is what a scientist signs (``fedfunc sign --proximal-mu --clip-norm --transform``): FedProx's
μ for the training loop, and the ordered transforms between training and packaging. Because it is
signed, the orchestrator cannot change it and nothing at run start can; the silo checks it against its
own policy, whose ``update_transforms`` run first (a site's own filters before the job's, as in FLARE).

The default bound. A bundle always fixes a clip norm unless its signer turns clipping off: when the
scientist sets none, ``fedfunc sign`` derives it from the initial model (``default_clip_norm``): the
orchestrator's default bound on updates (``fedfunc.security.update_bound.default_bound``: 10 × ‖initial
model‖₂ over its floating tensors, at least 0.1 × √(number of floating parameters)), so the silo clips to
exactly what the orchestrator would hold it to. An honest
round of local training moves a model by about its own size or less (digits MLP, ‖initial‖₂ = 5.0:
first-round updates of 2.1–5.9 at the task's defaults, 7.0–11.5 at 5 epochs and lr 0.1, so the default
of 49.7 leaves a 4× margin), while a silo that adds a large constant to every weight or scales its
update tenfold moves it by more; the orchestrator rejects any visible update above the same norm.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fedfunc.pipeline.base import Payload, Transform, TransformError
from fedfunc.pipeline.registry import TRANSFORMS
from fedfunc.security.update_bound import default_bound

class TransformSpec(BaseModel):
    """A transform by name with its options, checked by the transform's own options model (defaults
    filled in, so the signed config and each update's history show every value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    options: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown update transform {name!r}; known: {sorted(TRANSFORMS)}")
        return name

    @field_validator("options")
    @classmethod
    def _checked(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name not in TRANSFORMS:
            return options
        try:
            return TRANSFORMS[name](options).options.model_dump(mode="json")
        except TransformError as e:
            raise ValueError(str(e)) from None

    def build(self) -> Transform:
        return TRANSFORMS[self.name](self.options)


class SiloSide(BaseModel):
    """What the signed bundle fixes for the silo side of every round."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proximal_mu: float = Field(0.0, ge=0, allow_inf_nan=False,
                               description="FedProx: μ of the proximal term μ/2‖w − w_global‖² (0 = off)")
    transforms: list[TransformSpec] = Field(default_factory=list,
                                            description="update transforms, in order, after the silo's own")

    @property
    def clip_norm(self) -> float | None:
        """The tightest norm the signed transforms clip to (None: no clipping signed)."""
        norms = [t.options["max_norm"] for t in self.transforms if t.name == "clip"]
        return min(norms) if norms else None


def silo_side(config: Mapping[str, Any]) -> SiloSide:
    """The silo-side settings of a bundle config (its other keys, e.g. hyperparams, are not ours)."""
    return SiloSide.model_validate({k: config[k] for k in SiloSide.model_fields if k in config})


def chain(own: list[TransformSpec], signed: list[TransformSpec]) -> list[Transform]:
    """The silo's own transforms, then the signed ones; ``TransformError`` naming the first whose
    payload kind does not follow (e.g. ``delta`` of a delta)."""
    steps = [t.build() for t in (*own, *signed)]
    payload_after(steps)
    return steps


def payload_after(steps: list[Transform], kind: Payload = "weights") -> Payload:
    for step in steps:
        kind = step.output_kind(kind)
    return kind


OFF = "off"


def signed_side(initial: Mapping[str, np.ndarray], *, proximal_mu: float = 0.0, transforms: list[Any] = (),
                clip_norm: float | str | None = None) -> tuple[SiloSide, str | None]:
    """The silo side ``fedfunc sign`` fixes, and how its clip norm was chosen. ``transforms`` run in order;
    a ``clip`` to ``clip_norm`` follows them unless they clip already or ``clip_norm`` is ``"off"``, and
    without ``clip_norm`` its norm is ``default_clip_norm(initial)``. ``ValueError`` names a bad value."""
    specs = [TransformSpec.model_validate(t) for t in transforms]
    how = None
    if clip_norm != OFF and not any(t.name == "clip" for t in specs):
        if clip_norm is None:
            clip_norm, how = default_clip_norm(initial)
        else:
            how = "set by the signer"
        specs.append(TransformSpec(name="clip", options={"max_norm": clip_norm}))
    side = SiloSide(proximal_mu=proximal_mu, transforms=specs)
    chain([], side.transforms)
    return side, how


def default_clip_norm(initial: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """The clip norm a bundle gets when its signer sets none, and how it was derived (module docstring)."""
    bound = default_bound(initial)
    return bound.max_norm, bound.how.removeprefix("default: ")
