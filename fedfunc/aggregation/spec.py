"""How a run spec names its server strategy: ``"fedavg"`` or
``{"name": "fedadam", "options": {"eta": 0.01}, "wrappers": [{"name": "clip", "options": {"clipping_norm": 1}}]}``.

Validated at the edge: unknown strategies, wrappers and options, and out-of-range values, are errors
naming them (``fedfunc.validation.describe`` turns them into one line). What runs in the silo (e.g.
FedProx's μ) is not here: it lives in the signed bundle (see ``Strategy.requires_silo_config``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fedfunc.aggregation.base import Strategy, TooFewUpdates
from fedfunc.aggregation.registry import STRATEGIES, WRAPPERS
from fedfunc.validation import describe


class _Named(BaseModel):
    """A registered name and its options, checked by that class's own options model (defaults
    filled in, so the report and the state fingerprint show every value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: ClassVar[dict[str, type[Strategy]]] = {}
    kind: ClassVar[str] = ""

    name: str
    options: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name.lower() not in cls.registry:
            raise ValueError(f"unknown {cls.kind} {name!r}; known: {sorted(cls.registry)}")
        return name.lower()

    @field_validator("options")
    @classmethod
    def _checked_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.data.get("name") not in cls.registry:
            return options  # the name's own error says why
        try:
            return cls.registry[info.data["name"]].Options.model_validate(options).model_dump(mode="json")
        except ValidationError as e:
            raise ValueError(f"{describe(e)} (options of {info.data['name']})") from None


class WrapperSpec(_Named):
    registry = WRAPPERS
    kind = "strategy wrapper"


class StrategySpec(_Named):
    """The server strategy of a run, its options and the wrappers around it, innermost first."""

    registry = STRATEGIES
    kind = "aggregation strategy"

    wrappers: list[WrapperSpec] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _plain_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    def build(self) -> Strategy:
        strategy = STRATEGIES[self.name](self.options)
        for wrapper in self.wrappers:
            strategy = WRAPPERS[wrapper.name](strategy, wrapper.options)
        return strategy

    def check_run(self, silos: int, silo_config: Mapping[str, Any]) -> Strategy:
        """The strategy, if a run over ``silos`` silos whose signed bundle fixes ``silo_config`` (the
        silo-side settings, e.g. ``proximal_mu``) can use it; else ``ValueError`` naming the rule.

        Secure aggregation (a later issue) shows the server only the sum of the updates: a run that
        requires it must also be refused here when ``build().needs_individual_updates`` (robust rules,
        server-side clipping), since those rules read each update in the clear.
        """
        strategy = self.build()
        try:
            strategy.check_count(silos)
        except TooFewUpdates as e:
            raise ValueError(f"strategy: {e} — the run has {silos} silo(s)") from None
        for key in sorted(strategy.requires_silo_config):
            value = silo_config.get(key)
            if not value:
                raise ValueError(f"strategy: {self.name} runs {key} in the silos, so the signed bundle must set "
                                 f"{key} > 0 (it has {value!r}); sign it with `fedfunc sign --{key.replace('_', '-')}`")
        return strategy
