"""``fedfunc sign``'s work, on the scientist's machine: load a task folder, fix its hyper-parameters, build
the initial weights once, and pack everything into a signed bundle (``fedfunc.security.bundle``)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedfunc.pipeline.config import signed_side
from fedfunc.security.bundle import pack
from fedfunc.tasks.api import Task
from fedfunc.tasks.folder import TaskToml, read_task_folder
from fedfunc.tasks.loader import build_model, hyperparams_for, task_class
from fedfunc.weights import encode, model_to_arrays


@dataclass(frozen=True)
class PreparedTask:
    """A task folder loaded the way a silo loads a bundle, with its initial weights built once."""

    toml: TaskToml
    files: dict[str, bytes]
    task: Task
    initial: dict[str, np.ndarray]


def prepare(folder: Path, hyperparams: Mapping[str, Any] | None = None) -> PreparedTask:
    """Load the task in ``folder`` (imported from its files' bytes, as in a silo) with ``hyperparams`` (the
    task's defaults where not given). Raises ``TaskFolderError`` or ``TaskError`` naming what is at fault."""
    toml, files = read_task_folder(folder)
    cls = task_class(files, toml.entry, origin=str(Path(folder).resolve()))
    task = cls(hyperparams_for(cls, hyperparams or {}))
    return PreparedTask(toml, files, task, model_to_arrays(build_model(task)))


def build_bundle(folder: Path, key: Ed25519PrivateKey, hyperparams: Mapping[str, Any] | None = None, *,
                 proximal_mu: float = 0.0, transforms: list[Any] = (), clip_norm: float | str | None = None) -> bytes:
    """The signed bundle of the task in ``folder``: its files, requirements, hyper-parameters, initial weights
    and silo side — FedProx's μ, the update transforms and the clip norm, by default derived from the
    initial weights (``fedfunc.pipeline.config.signed_side``)."""
    p = prepare(folder, hyperparams)
    side, _ = signed_side(p.initial, proximal_mu=proximal_mu, transforms=transforms, clip_norm=clip_norm)
    return pack(task=p.toml.name, entry=p.toml.entry, num_classes=p.task.num_classes,
                requirements=p.toml.requirements,
                config={"hyperparams": p.task.hp.model_dump(mode="json"), **side.model_dump(mode="json")},
                files=p.files, weights=encode(p.initial, {"task": p.toml.name, "round": "0"}), key=key)
