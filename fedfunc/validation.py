"""One wording for validation errors: every bad field named, with pydantic's reason."""
from __future__ import annotations

from pydantic import ValidationError


def describe(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {'missing' if err['type'] == 'missing' else err['msg']}"
        for err in e.errors())
