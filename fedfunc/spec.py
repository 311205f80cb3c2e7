"""The run spec: what a data scientist asks for, validated at the edge so errors name the field."""
from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedfunc.aggregation.spec import StrategySpec
from fedfunc.contracts import BUNDLE_HASH, TASK_NAME
from fedfunc.validation import SILO_NAME_RULE, is_silo_name, parse

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # fullmatch: a run id is an instance id and a blob path


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None


class SpecError(ValueError):
    """A run spec that cannot run; the message names the field."""


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str | None = Field(None, pattern=BUNDLE_HASH,
                               description="the signed task bundle's hash (`fedfunc bundle upload` prints it)")
    task: str | None = Field(None, pattern=TASK_NAME, description="the bundle's task; filled in from the bundle")
    silos: list[str] | Literal["all"] = Field(
        "all", description="silo names, or 'all' = every ready silo (except evaluators) at the start of each round")
    evaluators: list[str] = Field(default_factory=list, description=(
        "silos that only evaluate — e.g. an orchestrator-owned held-out set; their figures are shown beside the "
        "pooled test accuracy of the training silos and never decide anything"))
    rounds: int = Field(10, ge=1, le=1000)
    quorum: float = Field(0.5, gt=0, le=1, description="fraction of a round's silos whose updates must be accepted")
    min_silos: int = Field(1, ge=1, description="absolute floor under the quorum")
    round_deadline_s: float = Field(600, ge=1, le=7 * 86400)
    hyperparams: dict[str, Any] | None = Field(
        None, description="the bundle's signed hyper-parameters; filled in from it (a spec stating others is refused)")
    strategy: StrategySpec = Field(
        default_factory=lambda: StrategySpec(name="fedavg"),
        description='server strategy: "fedavg" or {"name", "options", "wrappers"} (fedfunc.aggregation)')
    checkpoint_every: int = Field(5, ge=1, le=100, description="continue_as_new every K rounds to bound history")
    target_accuracy: float | None = Field(None, gt=0, le=1, description=(
        "stop once a model's pooled accuracy over the silos' test parts reaches it"))
    max_update_mb: float = Field(256, gt=0, le=4096)
    max_update_norm: float | None = Field(
        None, gt=0, description="bound on ||update - global||_2; default: derived from the initial model "
                                "(fedfunc.security.update_bound)")
    max_update_norm_vs_median: float | None = Field(
        None, gt=1, description="also reject an update whose norm exceeds this multiple of the round's median")
    max_samples_per_silo: int | None = Field(
        None, ge=1, description="cap on the num_samples a silo's update is weighted by")

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
            bad = [name for name in v if not is_silo_name(name)]
            if bad:
                raise ValueError(f"{bad[0][:40]!r} is not a silo name ({SILO_NAME_RULE})")
        return v

    @model_validator(mode="after")
    def _evaluators_apart(self):
        if len(set(self.evaluators)) != len(self.evaluators):
            raise ValueError("evaluators: silo names repeat")
        bad = [name for name in self.evaluators if not is_silo_name(name)]
        if bad:
            raise ValueError(f"evaluators: {bad[0][:40]!r} is not a silo name ({SILO_NAME_RULE})")
        both = sorted(set(self.evaluators) & set(self.silos if isinstance(self.silos, list) else []))
        if both:
            raise ValueError(f"evaluators: {both} also train (listed in silos); an evaluator only evaluates")
        return self

    def needed(self, n_silos: int) -> int:
        """How many accepted updates a round with ``n_silos`` silos needs."""
        return max(self.min_silos, math.ceil(self.quorum * n_silos))


def parse_spec(data: object) -> RunSpec:
    """Validate a spec; on failure a ``SpecError`` whose message names each bad field."""
    return parse(RunSpec, data, SpecError, "run spec")
