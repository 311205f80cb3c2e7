"""HTTP roles: 401 for anonymous, 403 for the wrong role, each with a body naming the rule."""
import base64
import json

import pytest

from fedfunc.security.roles import AuthError, principal_roles, require

KEYS = {"adm-key": "admin", "sci-key": "scientist"}


def principal(*roles, role_typ="roles") -> str:
    claims = [{"typ": role_typ, "val": r} for r in roles] + [{"typ": "name", "val": "ada@example.org"}]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "role_typ": role_typ, "claims": claims}).encode()).decode()


def test_api_keys_map_to_roles():
    assert principal_roles({"X-Api-Key": "adm-key"}, KEYS) == {"admin"}
    assert principal_roles({"x-api-key": "sci-key"}, KEYS) == {"scientist"}
    assert principal_roles({"x-api-key": "wrong"}, KEYS) == set()
    assert principal_roles({}, KEYS) == set()


def test_anonymous_gets_401_and_wrong_role_403():
    with pytest.raises(AuthError) as e:
        require("admin", {}, KEYS)
    assert e.value.status == 401 and e.value.body["rule"] == "auth.anonymous"
    with pytest.raises(AuthError) as e:
        require("admin", {"x-api-key": "sci-key"}, KEYS)
    assert e.value.status == 403 and e.value.body == {
        "error": "forbidden", "rule": "auth.role",
        "message": "this route needs role admin; the caller has scientist"}
    assert require(("admin", "scientist"), {"x-api-key": "sci-key"}, KEYS) == "scientist"


def test_easy_auth_principal_roles_when_trusted():
    headers = {"X-MS-CLIENT-PRINCIPAL": principal("scientist")}
    assert require("scientist", headers, {}, trust_principal_header=True) == "scientist"
    role_claim = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    assert principal_roles({"X-MS-CLIENT-PRINCIPAL": principal("admin", role_typ=role_claim)}, {},
                           trust_principal_header=True) == {"admin"}
    assert principal_roles({"X-MS-CLIENT-PRINCIPAL": "%%%not-base64"}, {}, trust_principal_header=True) == set()


def test_a_forged_principal_header_is_ignored_without_easy_auth(monkeypatch):
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    with pytest.raises(AuthError) as e:
        require("admin", {"X-MS-CLIENT-PRINCIPAL": principal("admin")}, KEYS)
    assert e.value.status == 401
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert require("admin", {"X-MS-CLIENT-PRINCIPAL": principal("admin")}, KEYS) == "admin"


def test_unknown_roles_in_settings_or_claims_grant_nothing():
    assert principal_roles({"x-api-key": "k"}, {"k": "root"}) == set()
    assert principal_roles({"X-MS-CLIENT-PRINCIPAL": principal("owner")}, {}, trust_principal_header=True) == set()
