import pytest
from pydantic import ValidationError

from fedfunc.registry import SiloRecord, UnknownSilo


def _record(name: str, **kw) -> SiloRecord:
    return SiloRecord(name=name, account="silo07", blob_url="http://127.0.0.1:1/silo07", compute="local",
                      policy_ref="http://127.0.0.1:1/silo07/policy/policy.json", **kw)


def test_put_get_list_status_remove(registry):
    registry.put(_record("reg-a", trusted_signers=["k1", "k2"]))
    registry.put(_record("reg-b"))
    got = registry.get("reg-a")
    assert got.trusted_signers == ["k1", "k2"] and got.status == "onboarding" and got.outbox_read_sas is None
    registry.set_status("reg-a", "ready")
    names = lambda status=None: [r.name for r in registry.list(status) if r.name.startswith("reg-")]
    assert names("ready") == ["reg-a"] and names() == ["reg-a", "reg-b"]
    registry.remove("reg-a")
    registry.remove("reg-b")
    with pytest.raises(UnknownSilo, match="'reg-a'"):
        registry.get("reg-a")


def test_put_is_an_idempotent_upsert_keeping_created_at(registry):
    first = registry.put(_record("reg-c"))
    again = registry.put(_record("reg-c", status="ready"))
    assert again.created_at == first.created_at and registry.get("reg-c").status == "ready"
    assert len([r for r in registry.list() if r.name == "reg-c"]) == 1
    registry.remove("reg-c")


def test_bad_values_are_refused_naming_the_field(registry):
    with pytest.raises(ValidationError, match="name"):
        _record("Bad_Name")
    registry.put(_record("reg-d"))
    with pytest.raises(ValidationError, match="status"):
        registry.set_status("reg-d", "deleted")
    registry.remove("reg-d")
    with pytest.raises(UnknownSilo):
        registry.remove("reg-d")


def test_registry_never_stores_an_account_key(registry, silos, azurite):
    record = silos("reg-keys")
    registry.put(record)
    row = registry.table.get_entity("silo", "reg-keys")
    key = azurite.account(record.account).key
    assert all(key not in str(v) for v in row.values())
    registry.remove("reg-keys")
