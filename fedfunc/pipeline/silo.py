"""The silo side of one job, as the silo runner (and the in-process simulation) drives it: the training
hooks the signed bundle asks for, then the silo's own transforms and the signed ones, recorded in order."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedfunc.pipeline.base import Update
from fedfunc.pipeline.config import SiloSide, TransformSpec, chain


class SiloPipeline:
    def __init__(self, side: SiloSide, own: Sequence[TransformSpec] = ()):
        """``TransformError`` naming the transform if the silo's own and the signed transforms do not chain."""
        self.side = side
        self.transforms = chain(list(own), side.transforms)
        self._hooks: list = []

    def hooks(self) -> list:
        """The training loop's hooks (``fedfunc.tasks.loop.TrainingHook``): FedProx's proximal term when μ > 0."""
        from fedfunc.pipeline.proximal import ProximalTerm

        self._hooks = [ProximalTerm(self.side.proximal_mu)] if self.side.proximal_mu > 0 else []
        return self._hooks

    def finish(self, trained: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> Update:
        """The update to package: the trained model through the transforms, its history starting with the
        hooks that shaped training."""
        update = Update(dict(trained), base, history=tuple(h.step() for h in self._hooks))
        for transform in self.transforms:
            update = transform(update)
        return update
