"""One way to validate what crosses the edge: every bad field named, with pydantic's reason."""
from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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
