"""How a run spec names its server strategy: ``"fedavg"`` or
``{"name": "fedadam", "options": {"eta": 0.01}, "wrappers": [{"name": "clip", "options": {"clipping_norm": 1}}]}``.

Validated at the edge: unknown strategies, wrappers and options, and out-of-range values, are errors
naming them (``fedfunc.validation.describe`` turns them into one line). What runs in the silo (e.g.
FedProx's μ) is not here: it lives in the signed bundle (see ``Strategy.requires_silo_config``).
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fedfunc.aggregation.base import Strategy
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
