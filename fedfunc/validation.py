"""One way to validate what crosses the edge: every bad field named, with pydantic's reason."""
from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# A silo's name: it becomes blob paths, table keys and storage resource names, so it is checked wherever
# it enters (an onboarding request, a run spec, a route) before anything looks it up.
SILO_NAME = r"^[a-z0-9][a-z0-9-]{1,22}[a-z0-9]$"
SILO_NAME_RULE = "3-24 lowercase letters, digits or hyphens, starting and ending with a letter or digit"


def is_silo_name(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(SILO_NAME, value) is not None


def describe(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {'missing' if err['type'] == 'missing' else err['msg']}"
        for err in e.errors())


def parse(model: type[M], body: object, error: type[Exception], what: str) -> M:
    """``body`` as ``model``, or ``error`` naming each bad field of the ``what``."""
    if not isinstance(body, dict):
        raise error(f"the {what} must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise error(f"invalid {what}: {describe(e)}") from None


class UnknownName(KeyError):
    """A name that is not registered. KeyError's str() would quote the whole message; this one reads."""

    def __init__(self, name: str, message: str):
        super().__init__(name)
        self.name, self.message = name, message

    def __str__(self) -> str:
        return self.message
