"""Code bundles: signing, every refusal, and real tampering of installed code."""
import shutil

import pytest

from fedfunc.contracts import Hyperparams
from fedfunc.security import Refused, bundle as bundle_mod, keys
from fedfunc.security.bundle import build_bundle, check_installed_code, check_request, sign_bundle, verify_bundle

SCIENTIST = keys.generate()
TRUSTED = [keys.public_b64(SCIENTIST.public_key())]
CONFIG = {"hyperparams": {"epochs": 1, "lr": 0.05, "batch_size": 32, "seed": 0}}


@pytest.fixture(scope="module")
def signed():
    return sign_bundle(build_bundle("digits", CONFIG), SCIENTIST)


def test_bundle_covers_the_task_code_reachable_from_the_registry(signed):
    files = signed.bundle.files
    assert {"fedfunc/tasks/registry.py", "fedfunc/tasks/digits.py", "fedfunc/tasks/base.py"} <= set(files)
    assert not any(f.startswith("fedfunc/silo/") for f in files)


def test_code_hash_is_stable_and_changes_with_the_config(signed):
    assert build_bundle("digits", CONFIG).code_hash == signed.code_hash
    other = {"hyperparams": {**CONFIG["hyperparams"], "epochs": 2}}
    assert build_bundle("digits", other).code_hash != signed.code_hash


def test_valid_bundle_verifies(signed):
    assert verify_bundle(signed.model_dump(mode="json"), TRUSTED) == signed.bundle
    check_installed_code(signed.bundle)


def _refused(rule, fn, *args) -> Refused:
    with pytest.raises(Refused) as e:
        fn(*args)
    assert e.value.rule == rule, str(e.value)
    return e.value


def test_unsigned_malformed_and_untrusted(signed):
    _refused("bundle.unsigned", verify_bundle, None, TRUSTED)
    _refused("bundle.malformed", verify_bundle, {"bundle": "x"}, TRUSTED)
    err = _refused("bundle.untrusted_signer", verify_bundle, signed, [keys.public_b64(keys.generate().public_key())])
    assert signed.signer in err.message and signed.code_hash[:16] in err.object


def test_signature_over_another_hash_is_refused(signed):
    other = sign_bundle(build_bundle("breast_cancer", CONFIG), SCIENTIST)
    forged = signed.model_copy(update={"signature": other.signature})
    _refused("bundle.signature", verify_bundle, forged, TRUSTED)


def test_manifest_edited_after_signing_is_refused(signed):
    edited = signed.bundle.model_copy(update={"config": {"hyperparams": {**CONFIG["hyperparams"], "epochs": 99}}})
    _refused("bundle.manifest", verify_bundle, signed.model_copy(update={"bundle": edited}), TRUSTED)


@pytest.fixture
def installed_copy(tmp_path, monkeypatch):
    """A copy of the installed package the checks read instead of the real one, for tampering."""
    shutil.copytree(bundle_mod.PACKAGE_ROOT / "fedfunc" / "tasks", tmp_path / "fedfunc" / "tasks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(bundle_mod, "PACKAGE_ROOT", tmp_path)
    return tmp_path / "fedfunc" / "tasks"


def test_tampered_installed_code_is_refused_naming_the_file(signed, installed_copy):
    check_installed_code(signed.bundle)  # the untouched copy matches
    path = installed_copy / "base.py"
    path.write_text(path.read_text() + "\n# exfiltrate here\n")
    err = _refused("bundle.code", check_installed_code, signed.bundle)
    assert err.object == "fedfunc/tasks/base.py" and "differs from" in err.message


def test_added_module_reached_by_the_registry_is_refused(signed, installed_copy):
    (installed_copy / "evil.py").write_text("X = 1\n")
    reg = installed_copy / "registry.py"
    reg.write_text("import fedfunc.tasks.evil\n" + reg.read_text())
    err = _refused("bundle.code", check_installed_code, signed.bundle)
    assert {err.object} <= {"fedfunc/tasks/evil.py", "fedfunc/tasks/registry.py"}


def test_request_must_match_the_signed_task_and_config(signed):
    from fedfunc.contracts import SiloJobRequest
    req = SiloJobRequest(run_id="r", round=0, silo="alpha", nonce="n", task="digits",
                         hyperparams=Hyperparams(**CONFIG["hyperparams"]), model_url="http://x/m",
                         model_sha256="0" * 64, outbox_prefix="runs/r/rounds/0000/silos/alpha/")
    check_request(signed.bundle, req)
    _refused("bundle.task", check_request, signed.bundle, req.model_copy(update={"task": "breast_cancer"}))
    err = _refused("bundle.config", check_request, signed.bundle,
                   req.model_copy(update={"hyperparams": Hyperparams(epochs=30)}))
    assert err.object == "hyperparams"


def test_bad_config_or_task_fails_at_build_time():
    with pytest.raises(ValueError, match="hyperparams"):
        build_bundle("digits", {})
    with pytest.raises(ValueError, match="unknown task"):
        build_bundle("nope", CONFIG)
