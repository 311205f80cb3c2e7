"""``fedfunc task new``: a task folder to start from — code, hyper-parameter schema, a tiny sample data set
(three silos' CSV tables, for ``fedfunc task try``) and a README."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fedfunc.contracts import TASK_NAME

SAMPLE_SILOS = 3
FEATURES = 4

TOML = '''name = "{name}"
entry = "task:{cls}"
requirements = ["torch>=2.0", "numpy>=1.24"]
'''

CODE = '''"""{name}: a classifier over CSV / Parquet tables with columns x1..x{features} and an integer label.

Edit build_model and read_data for your model and data; the platform trains and evaluates it.
Import other modules of this folder relatively: from .model import Net.
"""
import numpy as np
from pydantic import Field
from torch import nn

from fedfunc.tasks.api import Hyperparams, Task, array_dataset

FEATURES = [f"x{{i}}" for i in range(1, {features} + 1)]
LABEL = "label"


class {cls}Hyperparams(Hyperparams):
    epochs: int = 5
    lr: float = 0.1
    batch_size: int = 16
    hidden: int = Field(16, ge=1, le=1024, description="width of the hidden layer")


class {cls}(Task):
    Hyperparams = {cls}Hyperparams
    num_classes = 2

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(len(FEATURES), self.hp.hidden), nn.ReLU(),
                             nn.Linear(self.hp.hidden, self.num_classes))

    def read_data(self, reader):
        table = reader.table("*", {{**{{c: "float32" for c in FEATURES}}, LABEL: "int64"}})
        return array_dataset(np.stack([table[c] for c in FEATURES], axis=1), table[LABEL])
'''

README = '''# {name}

A fedfunc task. `task.py` defines the model (`build_model`), how a silo's data is read (`read_data`,
through a reader over that silo's `data/{name}/train/` or `data/{name}/test/`) and the hyper-parameter
schema; the platform runs the training and evaluation loops. `sample/` holds a tiny data set of
{silos} silos for trying the task locally; it is never shipped in the bundle.

    fedfunc task try .                      # a quick in-process federation over sample/, no stack
    fedfunc sign --task-dir . --key scientist.pem --out {name}.fedbundle
    fedfunc bundle upload {name}.fedbundle  # prints the bundle hash for a run spec

Each silo owner uploads their own data (CSV/Parquet with columns x1..x{features}, label):

    fedfunc silo upload SILO --task {name} --train path/to/train --test path/to/test

and allows the task in their policy (`allowed_tasks`). Declare what the code imports in `task.toml`'s
`requirements`: a silo whose environment lacks one refuses the job, naming it.
'''


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[_-]", name)) or "Task"


def sample_tables(seed: int = 0) -> dict[str, bytes]:
    """Three silos' train and test CSV files: two Gaussian classes, shifted per silo."""
    rng = np.random.default_rng(seed)
    files = {}
    for s in range(SAMPLE_SILOS):
        for part, n in (("train", 60), ("test", 20)):
            y = rng.integers(0, 2, n)
            x = rng.normal(0, 1, (n, FEATURES)) + (y[:, None] * 2 - 1) * 1.2 + s * 0.3
            rows = [",".join([*(f"x{i}" for i in range(1, FEATURES + 1)), "label"])]
            rows += [",".join([*(f"{v:.4f}" for v in xi), str(int(yi))]) for xi, yi in zip(x, y)]
            files[f"sample/site-{s + 1}/{part}/data.csv"] = ("\n".join(rows) + "\n").encode()
    return files


def new_task(folder: Path, name: str) -> list[Path]:
    """Write a new task folder; refuses to touch an existing, non-empty folder."""
    if not re.match(TASK_NAME, name):
        raise ValueError(f"task name {name!r}: lowercase letters, digits, '_' or '-', starting with a letter")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty")
    cls = class_name(name)
    files = {"task.toml": TOML.format(name=name, cls=cls).encode(),
             "task.py": CODE.format(name=name, cls=cls, features=FEATURES).encode(),
             "README.md": README.format(name=name, silos=SAMPLE_SILOS, features=FEATURES).encode(),
             **sample_tables()}
    written = []
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written
