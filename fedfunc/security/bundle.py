"""Signed task bundles: a scientist's task code, config, requirements and initial weights in one file.

A bundle (``*.fedbundle``) is a ZIP archive of stored (uncompressed) entries:

- ``manifest.json`` — the signed part: format, task name, entry point, class count, PEP 508 requirements,
  the config (hyper-parameters and, later, silo-side sections), and the sha256 and size of every file
  and of the initial weights. The bundle's identity, its ``code_hash``, is the sha256 of these bytes.
- ``signature.json`` — the signer's key id, public key and Ed25519 signature over ``code_hash``.
- ``weights.safetensors`` — the initial global model (round 0), built once at signing.
- ``files/<path>`` — the task folder's files.

A silo verifies before it imports anything: the signer is one its policy trusts and the signature holds
(with the trusted key, not the embedded one), then every file and the weights hash to the manifest, and
no file is missing or added. Reading is safe on hostile input: the size is bounded before parsing, names
are plain relative paths (no ``..``, no absolute paths, no links), entries are not compressed (no zip
bombs) and counted, and nothing is ever unpickled or written to disk.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedfunc.contracts import BUNDLE_HASH, TASK_NAME
from fedfunc.pipeline.config import SiloSide
from fedfunc.security import Refused
from fedfunc.security.keys import key_id, keyring, parse_public_b64, public_b64
from fedfunc.validation import describe

FORMAT = "fedfunc-bundle/2"
_DOMAIN = b"fedfunc-bundle/2\n"
MANIFEST, SIGNATURE, WEIGHTS, FILES = "manifest.json", "signature.json", "weights.safetensors", "files/"
MAX_BUNDLE_BYTES = 64 * 2**20   # what a silo reads at most; the API's bound is a setting (FEDFUNC_MAX_BUNDLE_MB)
MAX_ENTRIES = 2000
MAX_PATH = 240
ENTRY = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"  # module:Class
_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class BundleConfig(SiloSide):
    """What the signer fixes for the silo side: the hyper-parameters and ``SiloSide`` (FedProx's μ, the update
    transforms with the clip norm). Sections for later features (DP, secure aggregation) become typed fields
    here: a silo whose platform predates a section refuses a bundle that sets it (``bundle.config``) instead
    of silently ignoring it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hyperparams: dict[str, Any]


class BundleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fedfunc-bundle/2"] = FORMAT
    task: str = Field(pattern=TASK_NAME)
    entry: str = Field(pattern=ENTRY)
    num_classes: int = Field(ge=2)
    requirements: list[str] = Field(default_factory=list)
    config: dict[str, Any]
    files: dict[str, FileEntry]
    weights: FileEntry


class BundleSignature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    signer: str          # key id of public_key
    public_key: str      # base64 Ed25519 public key (silos verify with their own trusted copy)
    signature: str       # base64 Ed25519 signature over _DOMAIN + code_hash


def _entry(data: bytes) -> FileEntry:
    return FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def check_path(path: str) -> str | None:
    """Why ``path`` is not a plain relative file path a bundle may hold (None if it is)."""
    if not path or len(path) > MAX_PATH:
        return f"length {len(path)} (1..{MAX_PATH})"
    parts = path.split("/")
    bad = next((p for p in parts if not _PATH_PART.match(p) or p in (".", "..")), None)
    return None if bad is None else f"part {bad[:40]!r} is not a plain file or folder name"


def pack(*, task: str, entry: str, num_classes: int, requirements: list[str], config: Mapping[str, Any],
         files: Mapping[str, bytes], weights: bytes, key: Ed25519PrivateKey) -> bytes:
    """Sign and pack a bundle; deterministic for the same inputs and key (Ed25519 signatures are)."""
    for path in files:
        problem = check_path(path)
        if problem:
            raise ValueError(f"file {path!r}: {problem}")
    manifest = BundleManifest(task=task, entry=entry, num_classes=num_classes, requirements=list(requirements),
                              config=BundleConfig.model_validate(dict(config)).model_dump(mode="json"),
                              files={p: _entry(d) for p, d in sorted(files.items())}, weights=_entry(weights))
    manifest_bytes = _canonical(manifest.model_dump(mode="json"))
    code_hash = hashlib.sha256(manifest_bytes).hexdigest()
    signature = BundleSignature(signer=key_id(key.public_key()), public_key=public_b64(key.public_key()),
                                signature=base64.b64encode(key.sign(_DOMAIN + code_hash.encode())).decode())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        entries = [(MANIFEST, manifest_bytes), (SIGNATURE, _canonical(signature.model_dump())), (WEIGHTS, weights)]
        for name, data in [*entries, *((FILES + p, d) for p, d in sorted(files.items()))]:
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            z.writestr(info, data)
    return out.getvalue()


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signer is trusted and whose every byte matches its signed manifest."""

    code_hash: str
    manifest: BundleManifest
    signer: str
    config: BundleConfig
    files: dict[str, bytes]
    weights: bytes


@dataclass(frozen=True)
class OpenedBundle:
    """A structurally sound bundle, not yet trusted: its manifest and signature, its entries unread."""

    code_hash: str
    manifest: BundleManifest
    signature: BundleSignature | None
    archive: zipfile.ZipFile

    @property
    def what(self) -> str:
        return f"bundle {self.code_hash[:16]} (task {self.manifest.task})"

    def verify(self, trusted_signers: Iterable[str] | None) -> VerifiedBundle:
        """Signature (by a signer in ``trusted_signers``; None: by the embedded key, as the API checks
        uploads), then every file and the weights against the manifest, then the config."""
        self._check_signature(trusted_signers)
        files, weights = self._check_contents()
        try:
            config = BundleConfig.model_validate(self.manifest.config)
        except ValidationError as e:
            raise Refused("bundle.config", f"{self.what} config", describe(e)) from None
        return VerifiedBundle(self.code_hash, self.manifest, self.signature.signer, config, files, weights)

    def _check_signature(self, trusted_signers: Iterable[str] | None) -> None:
        sig = self.signature
        if sig is None:
            raise Refused("bundle.unsigned", self.what, f"the bundle has no {SIGNATURE}")
        try:
            embedded = parse_public_b64(sig.public_key)
        except ValueError:
            raise Refused("bundle.signature", self.what, "the embedded public key is not an Ed25519 key") from None
        if key_id(embedded) != sig.signer:
            raise Refused("bundle.signature", self.what, f"signer {sig.signer} is not the embedded key's id")
        key = embedded if trusted_signers is None else keyring(trusted_signers).get(sig.signer)
        if key is None:
            raise Refused("bundle.untrusted_signer", self.what,
                          f"signer key {sig.signer} is not trusted by this silo's policy")
        try:
            key.verify(base64.b64decode(sig.signature, validate=True), _DOMAIN + self.code_hash.encode())
        except (InvalidSignature, binascii.Error, ValueError):
            raise Refused("bundle.signature", self.what, f"the signature does not verify with key {sig.signer}") from None

    def _read(self, name: str, rule: str, object_: str) -> bytes:
        """An entry's bytes; a ZIP checksum failure means its bytes changed, and is refused under ``rule``."""
        try:
            return self.archive.read(name)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            raise Refused(rule, object_, f"unreadable, its bytes changed after packing ({e})") from None

    def _check_contents(self) -> tuple[dict[str, bytes], bytes]:
        signed = self.manifest.files
        shipped = [n[len(FILES):] for n in self.archive.namelist() if n.startswith(FILES)]
        files = {}
        for path in sorted(set(signed) | set(shipped)):
            if path not in shipped:
                raise Refused("bundle.file_missing", path, "a file the manifest signs is not in the bundle")
            if path not in signed:
                raise Refused("bundle.file_added", path, "the file is not in the signed manifest (added after signing)")
            files[path] = self._read(FILES + path, "bundle.file_hash", path)
            if _entry(files[path]) != signed[path]:
                raise Refused("bundle.file_hash", path, "the file's sha256 differs from the signed one "
                                                        "(changed after signing)")
        return files, self.weights()

    def weights(self) -> bytes:
        """The initial weights, checked against the manifest (what the orchestrator takes from a bundle)."""
        weights = self._read(WEIGHTS, "bundle.weights", WEIGHTS)
        if _entry(weights) != self.manifest.weights:
            raise Refused("bundle.weights", WEIGHTS, "the initial weights differ from the signed sha256")
        return weights


def open_bundle(data: bytes, *, max_bytes: int = MAX_BUNDLE_BYTES) -> OpenedBundle:
    """Parse a bundle's structure (bounded, no trust yet); ``Refused`` with rule ``bundle.format``,
    ``bundle.size`` or ``bundle.malformed`` naming the entry otherwise."""
    if len(data) > max_bytes:
        raise Refused("bundle.size", "bundle", f"{len(data)} bytes exceeds the {max_bytes}-byte bound")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise Refused("bundle.format", "bundle", f"not a bundle (ZIP) file: {e}") from None
    if len(infos) > MAX_ENTRIES:
        raise Refused("bundle.format", "bundle", f"{len(infos)} entries exceeds {MAX_ENTRIES}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        problem = check_path(name.removeprefix(FILES)) if name.startswith(FILES) else \
            (None if name in (MANIFEST, SIGNATURE, WEIGHTS) else "not a bundle entry")
        mode = info.external_attr >> 16
        if problem is None and (info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG)):
            problem = "not a regular file"
        if problem is None and (info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1):
            problem = "compressed or encrypted (bundles store entries as they are)"
        if problem is None and name in seen:
            problem = "appears twice"
        total += info.file_size
        if problem is None and total > max_bytes:
            problem = f"entries add up to more than {max_bytes} bytes"
        if problem:
            raise Refused("bundle.format", name[:MAX_PATH], problem)
        seen.add(name)
    for name in (MANIFEST, WEIGHTS):
        if name not in seen:
            raise Refused("bundle.malformed", name, "missing from the bundle")
    try:
        manifest_bytes = archive.read(MANIFEST)
        manifest = BundleManifest.model_validate_json(manifest_bytes)
    except (zipfile.BadZipFile, OSError) as e:
        raise Refused("bundle.malformed", MANIFEST, f"unreadable: {e}") from None
    except ValidationError as e:
        raise Refused("bundle.malformed", MANIFEST, describe(e)) from None
    try:
        signature = BundleSignature.model_validate_json(archive.read(SIGNATURE)) if SIGNATURE in seen else None
    except (zipfile.BadZipFile, OSError) as e:
        raise Refused("bundle.malformed", SIGNATURE, f"unreadable: {e}") from None
    except ValidationError as e:
        raise Refused("bundle.malformed", SIGNATURE, describe(e)) from None
    return OpenedBundle(hashlib.sha256(manifest_bytes).hexdigest(), manifest, signature, archive)


def verify_bundle(data: bytes, trusted_signers: Iterable[str] | None, *, expected_hash: str | None = None,
                  max_bytes: int = MAX_BUNDLE_BYTES) -> VerifiedBundle:
    """Open and verify; ``expected_hash`` (the job's ticketed reference) must be the bundle's identity."""
    opened = open_bundle(data, max_bytes=max_bytes)
    if expected_hash is not None and opened.code_hash != expected_hash:
        raise Refused("bundle.identity", opened.what, f"the job names bundle {expected_hash[:16]}, this one's "
                                                      f"manifest hashes to {opened.code_hash[:16]}")
    return opened.verify(trusted_signers)


def is_bundle_hash(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(BUNDLE_HASH, value) is not None
