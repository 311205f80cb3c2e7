"""Signed code bundles: a data scientist vouches for the training code and its config.

A bundle is the source of the training code a silo job imports (``fedfunc/tasks``: the task registry
and every module it reaches) plus a config JSON (the local hyper-parameters), summarised in a
canonical manifest whose sha256 is the ``code_hash``. The scientist signs the code hash with an
Ed25519 key (``fedfunc sign``); a silo runs the job only if a signer its policy trusts signed it,
the request asks for exactly the signed task and config, and the code installed on the silo hashes to
the signed manifest — so tampered code, a swapped config or an unsigned bundle never reads data.

The silo runner itself (``fedfunc/silo``, ``fedfunc/weights.py``) is the silo's own trusted software
(a pinned environment on AML), not part of the bundle.
"""
from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, ValidationError

from fedfunc.contracts import Hyperparams, SiloJobRequest
from fedfunc.security import Refused
from fedfunc.security.keys import key_id, keyring

FORMAT = "fedfunc-bundle/1"
_DOMAIN = b"fedfunc-bundle/1\n"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]   # the folder holding the ``fedfunc`` package
TASKS_PACKAGE = "fedfunc.tasks"
ENTRY_MODULES = ("fedfunc.tasks", "fedfunc.tasks.registry")  # what ``get_task`` imports first


class BundleConfig(BaseModel):
    """What the signer fixes besides the code; extra keys are signed too (e.g. privacy settings later)."""

    model_config = ConfigDict(extra="allow")
    hyperparams: Hyperparams


class Bundle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    task: str
    config: dict
    files: dict[str, str]  # path relative to PACKAGE_ROOT → sha256

    @property
    def code_hash(self) -> str:
        canonical = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class SignedBundle(BaseModel):
    """What ``fedfunc sign`` writes and a job request carries in ``bundle``."""

    model_config = ConfigDict(extra="forbid")

    bundle: Bundle
    code_hash: str
    signer: str     # key id
    signature: str  # base64 Ed25519 signature over _DOMAIN + code_hash


def _module_file(module: str) -> Path | None:
    base = PACKAGE_ROOT.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """``fedfunc.tasks`` modules imported by one source file (absolute and relative imports)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n == TASKS_PACKAGE or n.startswith(TASKS_PACKAGE + ".")}
    return found


def code_files() -> dict[str, str]:
    """sha256 of every source file the task registry reaches inside ``fedfunc.tasks``, without importing it."""
    todo, seen, files = list(ENTRY_MODULES), set(), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue  # an imported name that is not a module (a class) or a namespace package
        files[path.relative_to(PACKAGE_ROOT).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        todo.extend(_imports(path, module))
    return dict(sorted(files.items()))


def build_bundle(task: str, config: dict) -> Bundle:
    """The bundle of the installed training code for ``task`` with ``config`` (validated)."""
    from fedfunc.tasks.registry import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    try:
        checked = BundleConfig.model_validate(config)
    except ValidationError as e:
        raise ValueError(f"bundle config: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    return Bundle(task=task, config=checked.model_dump(mode="json"), files=code_files())


def sign_bundle(bundle: Bundle, private_key: Ed25519PrivateKey) -> SignedBundle:
    code_hash = bundle.code_hash
    signature = private_key.sign(_DOMAIN + code_hash.encode())
    return SignedBundle(bundle=bundle, code_hash=code_hash, signer=key_id(private_key.public_key()),
                        signature=base64.b64encode(signature).decode())


def verify_bundle(signed: SignedBundle | dict | None, trusted_signers: Iterable) -> Bundle:
    """The bundle, if a trusted signer signed exactly this manifest; else ``Refused``."""
    if signed is None:
        raise Refused("bundle.unsigned", "code bundle", "the job request carries no signed code bundle")
    try:
        signed = SignedBundle.model_validate(signed)
    except ValidationError as e:
        raise Refused("bundle.malformed", "code bundle", f"unreadable signed bundle ({e.error_count()} errors)") from None
    what = f"code bundle {signed.code_hash[:16]} (task {signed.bundle.task})"
    key = keyring(trusted_signers).get(signed.signer)
    if key is None:
        raise Refused("bundle.untrusted_signer", what, f"signer key {signed.signer} is not trusted by this silo's policy")
    try:
        key.verify(base64.b64decode(signed.signature, validate=True), _DOMAIN + signed.code_hash.encode())
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused("bundle.signature", what, f"signature does not verify with key {signed.signer}") from None
    if signed.bundle.code_hash != signed.code_hash:
        raise Refused("bundle.manifest", what, "the manifest does not hash to the signed code hash (tampered)")
    return signed.bundle


def check_installed_code(bundle: Bundle) -> None:
    """Refuse unless the code this process is about to import is byte-identical to the signed files."""
    installed = code_files()
    for path in sorted(set(installed) | set(bundle.files)):
        if installed.get(path) != bundle.files.get(path):
            state = "missing from" if path not in installed else ("not in" if path not in bundle.files else "differs from")
            raise Refused("bundle.code", path, f"installed file {state} the signed bundle (tampered or wrong version)")


def check_request(bundle: Bundle, request: SiloJobRequest) -> None:
    """The job must ask for exactly the signed task and hyper-parameters."""
    if request.task != bundle.task:
        raise Refused("bundle.task", f"task {request.task!r}", f"the signed bundle is for task {bundle.task!r}")
    signed = BundleConfig.model_validate(bundle.config).hyperparams
    if request.hyperparams != signed:
        raise Refused("bundle.config", "hyperparams",
                      f"request has {request.hyperparams.model_dump()}, the signed config {signed.model_dump()}")
