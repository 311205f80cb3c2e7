import os
import stat

import pytest

from fedfunc.security import keys


def test_save_and_load_roundtrip_with_private_key_mode_0600(tmp_path):
    key = keys.generate()
    priv, pub = keys.save_keypair(key, tmp_path / "orch")
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    loaded = keys.load_private(priv)
    assert keys.key_id(loaded.public_key()) == keys.key_id(key.public_key())
    assert keys.load_private(priv.read_text()).public_key() == key.public_key()  # PEM text, as app settings hold it
    for form in (pub, pub.read_text(), keys.public_b64(key.public_key())):
        assert keys.key_id(keys.load_public(form)) == keys.key_id(key.public_key())
    assert len(keys.key_id(key.public_key())) == 16


def test_an_existing_private_key_is_never_overwritten(tmp_path):
    keys.save_keypair(keys.generate(), tmp_path / "k")
    with pytest.raises(FileExistsError):
        keys.save_keypair(keys.generate(), tmp_path / "k")


def test_bad_public_key_is_named():
    with pytest.raises(ValueError, match="not a base64 raw Ed25519 public key"):
        keys.parse_public_b64("AAAA")
