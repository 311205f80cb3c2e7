"""Ed25519 keys: generate, save and load as PEM; name a public key by its key id.

A key id is the first 16 hex digits of sha256(raw public key): short enough to show, long enough
that no two keys in a policy collide by accident. Policies store raw public keys (base64), so a
key id alone can never be trusted without the key it names.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(*_RAW)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_b64(key: Ed25519PublicKey) -> str:
    """The form policies store: base64 of the 32 raw bytes."""
    return base64.b64encode(raw_public(key)).decode()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def save_keypair(key: Ed25519PrivateKey, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.pem`` (private, mode 0600, never overwritten) and ``stem.pub`` (public PEM)."""
    priv, pub = Path(f"{stem}.pem"), Path(f"{stem}.pub")
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    pub.write_bytes(public_pem(key.public_key()))
    return priv, pub


def load_private(value: str | Path) -> Ed25519PrivateKey:
    """A private key from PEM text or a path to a PEM file (app settings may hold either)."""
    text = str(value)
    data = text.encode() if text.lstrip().startswith("-----BEGIN") else Path(text).read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{'PEM' if text.startswith('-----') else text}: not an Ed25519 private key")
    return key


def parse_public_b64(text: str) -> Ed25519PublicKey:
    """The policy form: base64 of 32 raw bytes; ValueError naming the problem otherwise."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise ValueError(f"{text[:24]!r} is not a base64 raw Ed25519 public key (32 bytes)") from None


def load_public(value: str | Path) -> Ed25519PublicKey:
    """A public key from base64 raw bytes, PEM text, or a path to a PEM file."""
    text = str(value).strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    elif len(text) == 44:
        return parse_public_b64(text)
    else:
        key = serialization.load_pem_public_key(Path(text).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def keyring(public_keys) -> dict[str, Ed25519PublicKey]:
    """Key id → key for a list of public keys (any form ``load_public`` reads)."""
    keys = [k if isinstance(k, Ed25519PublicKey) else load_public(k) for k in public_keys]
    return {key_id(k): k for k in keys}
