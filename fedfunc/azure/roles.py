"""Role definition ids from infra/roles.json, the file the Bicep templates load: one source of truth."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

ROLES_JSON = Path(__file__).resolve().parents[2] / "infra" / "roles.json"


@lru_cache(maxsize=1)
def _roles() -> dict:
    return json.loads(ROLES_JSON.read_text())


def builtin(name: str) -> str:
    """The GUID of a built-in role by its key in roles.json, e.g. ``StorageBlobDataReader``."""
    try:
        return _roles()["builtIn"][name]
    except KeyError:
        raise KeyError(f"role {name!r} is not in {ROLES_JSON}") from None


def definition_id(subscription_id: str, name: str) -> str:
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{builtin(name)}"
