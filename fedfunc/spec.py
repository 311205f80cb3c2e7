"""The run spec: what a data scientist asks for, validated at the edge so errors name the field."""
from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedfunc.aggregation.spec import StrategySpec
from fedfunc.contracts import Hyperparams
from fedfunc.validation import parse

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class SpecError(ValueError):
    """A run spec that cannot run; the message names the field."""


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="a task registered in fedfunc.tasks (digits, breast_cancer)")
    silos: list[str] | Literal["all"] = Field(
        "all", description="silo names, or 'all' = every ready silo at the start of each round")
    rounds: int = Field(10, ge=1, le=1000)
    quorum: float = Field(0.5, gt=0, le=1, description="fraction of a round's silos whose updates must be accepted")
    min_silos: int = Field(1, ge=1, description="absolute floor under the quorum")
    round_deadline_s: float = Field(600, ge=1, le=7 * 86400)
    hyperparams: Hyperparams | None = Field(None, description="local training; defaults to the signed bundle's")
    bundle: dict | None = Field(None, description="the code bundle signed by a scientist (`fedfunc sign`)")
    strategy: StrategySpec = Field(
        default_factory=lambda: StrategySpec(name="fedavg"),
        description='server strategy: "fedavg" or {"name", "options", "wrappers"} (fedfunc.aggregation)')
    seed: int = 0
    checkpoint_every: int = Field(5, ge=1, le=100, description="continue_as_new every K rounds to bound history")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop early once reached")
    max_update_mb: float = Field(256, gt=0, le=4096)
    max_update_norm: float | None = Field(None, gt=0, description="bound on ||update - global||_2")

    aggregator: None = Field(None, exclude=True, description="renamed to strategy; refused with that reason")

    @field_validator("aggregator", mode="before")
    @classmethod
    def _renamed(cls, v):
        raise ValueError('renamed to "strategy" (a name, or {"name", "options", "wrappers"})')

    @field_validator("silos")
    @classmethod
    def _unique_silos(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("list at least one silo, or 'all'")
            if len(set(v)) != len(v):
                raise ValueError("silo names repeat")
        return v

    def needed(self, n_silos: int) -> int:
        """How many accepted updates a round with ``n_silos`` silos needs."""
        return max(self.min_silos, math.ceil(self.quorum * n_silos))


def parse_spec(data: object) -> RunSpec:
    """Validate a spec; on failure a ``SpecError`` whose message names each bad field."""
    return parse(RunSpec, data, SpecError, "run spec")
