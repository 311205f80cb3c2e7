"""Task bundles: packing and signing, every refusal a silo makes, and a format that is safe to open."""
import base64
import hashlib
import io
import json
import stat
import zipfile

import numpy as np
import pytest

from fedfunc.security import Refused, keys
from fedfunc.security.bundle import (FILES, MANIFEST, SIGNATURE, WEIGHTS, open_bundle, pack, verify_bundle)
from fedfunc.security.requirements import check_requirements, unmet
from fedfunc.weights import encode

SCIENTIST = keys.generate()
TRUSTED = [keys.public_b64(SCIENTIST.public_key())]
FILES_IN = {"task.toml": b'name = "t"\nentry = "task:T"\n', "task.py": b"X = 1\n", "lib/util.py": b"Y = 2\n"}
WEIGHTS_IN = encode({"w": np.zeros((2, 2), np.float32)})


def make(**over) -> bytes:
    fields = dict(task="t", entry="task:T", num_classes=2, requirements=["numpy>=1.0"],
                  config={"hyperparams": {"epochs": 1}}, files=FILES_IN, weights=WEIGHTS_IN, key=SCIENTIST)
    return pack(**{**fields, **over})


def entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def repack(items: dict[str, bytes], method=zipfile.ZIP_STORED, mode=stat.S_IFREG | 0o644) -> bytes:
    """A bundle rebuilt from ``items`` (what someone who edits a bundle after signing produces)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as z:
        for name, data in items.items():
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.compress_type = method
            z.writestr(info, data)
    return out.getvalue()


def refused(rule: str, data: bytes, trusted=TRUSTED, **kw) -> Refused:
    with pytest.raises(Refused) as e:
        verify_bundle(data, trusted, **kw)
    assert e.value.rule == rule, str(e.value)
    return e.value


def test_a_signed_bundle_verifies_and_holds_what_was_signed():
    data = make()
    bundle = verify_bundle(data, TRUSTED)
    assert bundle.files == FILES_IN and bundle.weights == WEIGHTS_IN
    assert bundle.manifest.requirements == ["numpy>=1.0"] and bundle.config.hyperparams == {"epochs": 1}
    assert bundle.signer == keys.key_id(SCIENTIST.public_key())
    assert make() == data, "packing is deterministic"
    assert verify_bundle(make(config={"hyperparams": {"epochs": 2}}), TRUSTED).code_hash != bundle.code_hash
    assert sorted(entries(data)) == sorted([MANIFEST, SIGNATURE, WEIGHTS, *(FILES + p for p in FILES_IN)])


def test_one_byte_changed_in_a_file_after_signing_is_refused_naming_the_file():
    items = entries(make())
    items[FILES + "lib/util.py"] = b"Y = 3\n"
    err = refused("bundle.file_hash", repack(items))
    assert err.object == "lib/util.py"


def test_a_raw_byte_flip_is_refused_naming_the_file():
    data = bytearray(make())
    at = bytes(data).index(b"Y = 2")
    data[at + 4] = ord("9")   # the ZIP checksum no longer matches either
    err = refused("bundle.file_hash", bytes(data))
    assert err.object == "lib/util.py"


def test_a_file_added_or_removed_after_signing_is_refused_naming_it():
    items = entries(make())
    err = refused("bundle.file_added", repack({**items, FILES + "evil.py": b"import os\n"}))
    assert err.object == "evil.py"
    del items[FILES + "task.py"]
    assert refused("bundle.file_missing", repack(items)).object == "task.py"


def test_changed_weights_are_refused():
    items = entries(make())
    items[WEIGHTS] = encode({"w": np.ones((2, 2), np.float32)})
    refused("bundle.weights", repack(items))


def test_unsigned_untrusted_and_forged_signatures_are_refused():
    items = entries(make())
    refused("bundle.unsigned", repack({k: v for k, v in items.items() if k != SIGNATURE}))
    refused("bundle.untrusted_signer", make(), trusted=[keys.public_b64(keys.generate().public_key())])
    other = entries(make(key=keys.generate()))   # someone else's signature on our manifest
    refused("bundle.untrusted_signer", repack({**items, SIGNATURE: other[SIGNATURE]}))
    edited = items[MANIFEST].replace(b'"epochs":1', b'"epochs":9')
    refused("bundle.signature", repack({**items, MANIFEST: edited}))


def test_the_ticketed_identity_must_match():
    data = make()
    refused("bundle.identity", data, expected_hash="0" * 64)


def resign(items: dict[str, bytes], edit) -> bytes:
    """The bundle with its manifest edited by ``edit`` and signed again by the (trusted) scientist."""
    manifest = json.loads(items[MANIFEST])
    edit(manifest)
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    code_hash = hashlib.sha256(raw).hexdigest()
    sig = {"signer": keys.key_id(SCIENTIST.public_key()), "public_key": TRUSTED[0],
           "signature": base64.b64encode(SCIENTIST.sign(b"fedfunc-bundle/2\n" + code_hash.encode())).decode()}
    return repack({**items, MANIFEST: raw, SIGNATURE: json.dumps(sig).encode()})


def test_a_config_section_this_platform_does_not_know_is_refused_not_ignored():
    with pytest.raises(ValueError, match="privacy"):
        make(config={"hyperparams": {}, "privacy": {"epsilon": 1}})  # the signer's platform cannot pack it
    data = resign(entries(make()), lambda m: m["config"].update(privacy={"epsilon": 1}))
    err = refused("bundle.config", data)
    assert "privacy" in err.message


@pytest.mark.parametrize("items, problem", [
    ({FILES + "../escape.py": b"x"}, "not a plain"),
    ({FILES + "/abs.py": b"x"}, "not a plain"),
    ({FILES + "a/./b.py": b"x"}, "not a plain"),
    ({"notes.txt": b"x"}, "not a bundle entry"),
])
def test_entry_names_are_plain_relative_paths(items, problem):
    base = entries(make())
    err = refused("bundle.format", repack({**base, **items}))
    assert problem in err.message


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_links_compression_duplicates_and_non_zips_are_refused():
    base = entries(make())
    assert "not a regular file" in refused("bundle.format", repack(base, mode=stat.S_IFLNK | 0o777)).message
    assert "compressed" in refused("bundle.format", repack(base, method=zipfile.ZIP_DEFLATED)).message
    dup = io.BytesIO()
    with zipfile.ZipFile(dup, "w") as z:
        for name, data in [*base.items(), (FILES + "task.py", b"X = 2\n")]:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    assert "twice" in refused("bundle.format", dup.getvalue()).message
    refused("bundle.format", b"not a zip at all")
    refused("bundle.malformed", repack({k: v for k, v in base.items() if k != MANIFEST}))


def test_size_is_bounded_before_parsing():
    data = make()
    with pytest.raises(Refused) as e:
        open_bundle(data, max_bytes=len(data) - 1)
    assert e.value.rule == "bundle.size"


def test_requirements_are_checked_against_installed_distributions():
    check_requirements(["numpy>=1.0", "pydantic", "nosuchpackage>=1; python_version < '3'"])
    assert "nosuchpackage-xyz is not installed" in unmet("nosuchpackage-xyz")
    assert "needs >=999" in unmet("numpy>=999")
    assert "PEP 508" in unmet("numpy >>> 1")
    with pytest.raises(Refused) as e:
        check_requirements(["numpy", "torch==0.0.1"])
    assert e.value.rule == "bundle.requirements" and e.value.object == "torch==0.0.1"
