"""Silo-side update transforms by name, as a signed bundle and a silo policy name them: one line each."""
from __future__ import annotations

from fedfunc.pipeline.base import Transform
from fedfunc.pipeline.clip import Clip
from fedfunc.pipeline.delta import Delta

TRANSFORMS: dict[str, type[Transform]] = {cls.name: cls for cls in (
    Delta,
    Clip,
)}
