"""The built-in tasks: ordinary task folders (``digits/``, ``breast_cancer/``), signed and shipped to silos
like any scientist's task, plus ``datasets``: scikit-learn's bundled data cut into silo parts for demos,
tests and benches (that module runs on the silo owner's side, never in a silo job)."""
from __future__ import annotations

from pathlib import Path

from fedfunc.validation import UnknownName

ROOT = Path(__file__).resolve().parent
NAMES = ("digits", "breast_cancer")


class UnknownTask(UnknownName):
    def __init__(self, name: str):
        super().__init__(name, f"unknown built-in task {name!r}; built-in tasks: {list(NAMES)} "
                               "(for your own task give its folder: --task-dir)")


def task_dir(name: str) -> Path:
    """The folder of built-in task ``name``."""
    if name not in NAMES:
        raise UnknownTask(name)
    return ROOT / name
