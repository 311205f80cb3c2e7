"""The orchestrator's side of task bundles: store an uploaded bundle once under its hash, read its manifest
and its initial weights.

The orchestrator never imports a bundle's code. On upload it checks the bundle is well formed, its
signature holds under its embedded key and every file matches the manifest, so a scientist hears at once
about a broken bundle; whether the signer is *trusted* is each silo's decision. Later it reads only what
it uses — the manifest and the initial weights (checked against the manifest) — and every silo verifies
the whole bundle again before importing anything, so a bundle changed in storage is refused by the silos.
"""
from __future__ import annotations

from fedfunc import layout
from fedfunc.coordinator.store import RunStore
from fedfunc.security.bundle import OpenedBundle, VerifiedBundle, open_bundle


class UnknownBundle(LookupError):
    def __init__(self, code_hash: str):
        super().__init__(f"no bundle {code_hash} has been uploaded (POST /api/bundles, or `fedfunc bundle upload`)")


def store_bundle(store: RunStore, data: bytes, max_bytes: int) -> tuple[VerifiedBundle, bool]:
    """Check and store an uploaded bundle once; (the bundle, whether this call stored it). ``Refused`` if bad."""
    bundle = open_bundle(data, max_bytes=max_bytes).verify(None)
    return bundle, store.create_once(layout.BUNDLES, layout.bundle(bundle.code_hash), data)


def open_stored(store: RunStore, code_hash: str) -> OpenedBundle:
    """A stored bundle's structure and manifest (``UnknownBundle`` if none was uploaded under that hash)."""
    data = store.get_bytes(layout.BUNDLES, layout.bundle(code_hash))
    if data is None:
        raise UnknownBundle(code_hash)
    opened = open_bundle(data, max_bytes=len(data))
    if opened.code_hash != code_hash:
        raise ValueError(f"{layout.BUNDLES}/{layout.bundle(code_hash)} holds bundle {opened.code_hash}")
    return opened
