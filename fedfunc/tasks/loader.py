"""Loading a task from its files: imported in memory from bytes already verified, checked against the API.

The files of a task folder (or of a verified bundle) become a package named after their content
(``fedfunc_task_<hash>``), served by an import hook straight from the bytes: nothing is unpacked to disk,
so what runs is exactly what was hashed, and two versions of a task never share modules. Errors are
``TaskError`` with the rule a silo reports (``task.import``, ``task.interface``, ``task.hyperparams``,
``task.build_model``, ``task.weights``).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import linecache
import sys
import traceback
from collections.abc import Mapping

import numpy as np
from pydantic import ValidationError

from fedfunc.contracts import Hyperparams
from fedfunc.evaluation import MAX_CLASSES
from fedfunc.tasks.api import REQUIRED, Task
from fedfunc.security.bundle import VerifiedBundle
from fedfunc.validation import describe
from fedfunc.weights import ModelManifest, decode, load_arrays_into, model_to_arrays


class TaskError(Exception):
    """The task's code cannot be used as a task; ``rule`` names the check."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule, self.message = rule, message


class _FilesImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``{package}.a.b`` from ``a/b.py`` (or ``a/b/__init__.py``) of an in-memory file set."""

    def __init__(self, package: str, files: Mapping[str, bytes], origin: str):
        self.package, self.files, self.origin = package, dict(files), origin
        self.dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}

    def _locate(self, fullname: str) -> tuple[str | None, bool] | None:
        if fullname == self.package:
            return (None, True)
        if not fullname.startswith(self.package + "."):
            return None
        rel = fullname[len(self.package) + 1:].replace(".", "/")
        if f"{rel}.py" in self.files:
            return (f"{rel}.py", False)
        if f"{rel}/__init__.py" in self.files:
            return (f"{rel}/__init__.py", True)
        if rel in self.dirs:
            return (None, True)
        return None

    def find_spec(self, fullname, path=None, target=None):
        found = self._locate(fullname)
        if found is None:
            return None
        file, is_package = found
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=f"{self.origin}/{file}" if file else None,
                                              is_package=is_package)
        if is_package:
            spec.submodule_search_locations = []
        spec.has_location = False
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        file, _ = self._locate(module.__name__)
        if file is None:
            return
        filename = f"{self.origin}/{file}"
        source = self.files[file].decode("utf-8")
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module.__file__ = filename
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)


_IMPORTERS: dict[str, _FilesImporter] = {}
TASK_PACKAGE_PREFIX = "fedfunc_task_"  # every task is imported as a package named after its files' content


def package_name(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path}\0{hashlib.sha256(files[path]).hexdigest()}\n".encode())
    return f"{TASK_PACKAGE_PREFIX}{h.hexdigest()[:16]}"


def _where(e: BaseException, origin: str) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(origin + "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename[len(origin) + 1:]}:{f.lineno})"


def task_class(files: Mapping[str, bytes], entry: str, origin: str = "bundle") -> type[Task]:
    """Import the task's entry point (``module:Class``) from ``files`` and check it is a usable ``Task``."""
    module_name, _, attr = entry.partition(":")
    package = package_name(files)
    if package not in _IMPORTERS:
        _IMPORTERS[package] = _FilesImporter(package, files, origin)
        sys.meta_path.insert(0, _IMPORTERS[package])
    origin = _IMPORTERS[package].origin
    try:
        module = importlib.import_module(f"{package}.{module_name}")
    except Exception as e:  # whatever the task's import raised
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name and f"{e.name.replace('.', '/')}.py" in files:
            hint = f"; import the task's own module {e.name!r} relatively (from .{e.name} import ...)"
        raise TaskError("task.import", f"importing {module_name}: {type(e).__name__}: {e}{_where(e, origin)}{hint}") \
            from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError("task.interface", f"{entry}: {module_name} defines no Task subclass {attr!r}")
    missing = [m for m in REQUIRED if getattr(cls, m) is getattr(Task, m)]
    if missing:
        raise TaskError("task.interface", f"task {attr} lacks required method(s) {missing}")
    classes = getattr(cls, "num_classes", None)
    if not (isinstance(classes, int) and 2 <= classes <= MAX_CLASSES):
        raise TaskError("task.interface", f"task {attr}.num_classes must be an int in 2..{MAX_CLASSES}, got {classes!r}")
    if not (isinstance(cls.Hyperparams, type) and issubclass(cls.Hyperparams, Hyperparams)):
        raise TaskError("task.interface", f"task {attr}.Hyperparams must subclass fedfunc.tasks.api.Hyperparams")
    return cls


def hyperparams_for(cls: type[Task], raw: Mapping) -> Hyperparams:
    """``raw`` validated by the task's schema, and by the platform's bounds on the fields its loop reads."""
    schema = cls.Hyperparams
    unknown = sorted(set(raw) - set(schema.model_fields))
    if unknown:
        raise TaskError("task.hyperparams", f"unknown hyper-parameter(s) {unknown}; the task's schema has "
                                            f"{sorted(schema.model_fields)}")
    try:
        hp = schema.model_validate(dict(raw))
        Hyperparams.model_validate(hp.model_dump(include=set(Hyperparams.model_fields)))
    except ValidationError as e:
        raise TaskError("task.hyperparams", describe(e)) from None
    return hp


def build_model(task: Task):
    """The task's model, built after seeding torch with ``hp.seed`` (signing builds the initial weights so)."""
    import torch

    torch.manual_seed(task.hp.seed)
    try:
        model = task.build_model()
    except Exception as e:
        raise TaskError("task.build_model", f"build_model: {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise TaskError("task.interface", f"build_model returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_manifest(have: ModelManifest, want: ModelManifest, what: str) -> None:
    """Raise ``task.weights`` naming the first tensor where ``have`` (``what``) differs from ``want``."""
    for name in sorted(set(have.tensors) | set(want.tensors)):
        a, b = have.tensors.get(name), want.tensors.get(name)
        if a != b:
            show = lambda t: "absent" if t is None else f"{t.dtype}{list(t.shape)}"  # noqa: E731
            raise TaskError("task.weights", f"tensor {name!r}: {what} has {show(a)}, the bundle's initial "
                                            f"weights {show(b)}")


def load_weights(model, arrays: Mapping[str, np.ndarray]) -> None:
    """Load ``arrays`` (names, shapes and dtypes as the bundle's initial weights) into the task's model."""
    check_manifest(ModelManifest.from_arrays(model_to_arrays(model)), ModelManifest.from_arrays(arrays),
                   "the task's model")
    load_arrays_into(model, arrays)


def from_bundle(bundle: VerifiedBundle) -> tuple[Task, dict[str, np.ndarray]]:
    """The task of a verified bundle, with its signed hyper-parameters, and the bundle's initial weights."""
    cls = task_class(bundle.files, bundle.manifest.entry, origin=f"bundle-{bundle.code_hash[:16]}")
    if cls.num_classes != bundle.manifest.num_classes:
        raise TaskError("task.interface", f"the task has num_classes={cls.num_classes}, the signed manifest "
                                          f"{bundle.manifest.num_classes}")
    return cls(hyperparams_for(cls, bundle.config.hyperparams)), decode(bundle.weights)[0]
