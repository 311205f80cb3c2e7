"""The built-in tasks' data: scikit-learn's bundled sets, cut the way a federation would hold them.

A fixed 25 % of each set is the *held-out* set (an evaluator silo's test part, never trained on); the
rest is the pool the silos share — IID or Dirichlet label-skewed (``fedfunc.tasks.partition``) — and
each silo's share is split, seeded, into its own train and test parts. Files are safetensors with
``x`` (float32, raw features) and ``y`` (int64), as the built-in tasks read them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedfunc import layout
from fedfunc.tasks.builtin import task_dir
from fedfunc.tasks.partition import partition
from fedfunc.weights import encode

HELDOUT_FRACTION = 0.25
TEST_FRACTION = 0.2
DATA_FILE = "data.safetensors"


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32
    y: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Split:
        return Split(self.x[idx], self.y[idx])

    def to_bytes(self) -> bytes:
        return encode({"x": self.x, "y": self.y})


@dataclass(frozen=True)
class SiloData:
    train: Split
    test: Split

    def files(self, task: str) -> dict[str, bytes]:
        """The blobs of this silo's ``data`` container: ``{task}/{part}/data.safetensors``."""
        return {layout.silo_data(task, "train") + DATA_FILE: self.train.to_bytes(),
                layout.silo_data(task, "test") + DATA_FILE: self.test.to_bytes()}


def load(name: str) -> tuple[Split, Split]:
    """(pool, held-out) of built-in task ``name``: a fixed, stratified split."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    task_dir(name)  # unknown names fail here, naming the built-in tasks
    d = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]()
    x_pool, x_held, y_pool, y_held = train_test_split(d.data, d.target, test_size=HELDOUT_FRACTION, random_state=0,
                                                      stratify=d.target)
    f32, i64 = np.float32, np.int64
    return Split(x_pool.astype(f32), y_pool.astype(i64)), Split(x_held.astype(f32), y_held.astype(i64))


def split_train_test(data: Split, *, seed: int, test_fraction: float = TEST_FRACTION) -> SiloData:
    """A silo's own seeded train/test split (at least one example on each side)."""
    order = np.random.default_rng(seed).permutation(len(data))
    n_test = min(max(1, round(test_fraction * len(data))), len(data) - 1)
    return SiloData(train=data.take(np.sort(order[n_test:])), test=data.take(np.sort(order[:n_test])))


def silo_parts(name: str, n_silos: int, *, alpha: float | None, seed: int) -> list[SiloData]:
    """The pool of ``name`` spread over ``n_silos`` silos, each split into its train and test parts."""
    pool, _ = load(name)
    return [split_train_test(pool.take(idx), seed=seed * 1000 + i)
            for i, idx in enumerate(partition(pool.y, n_silos, alpha=alpha, seed=seed))]


def local_silos(name: str, n_silos: int, *, alpha: float | None, seed: int) -> list:
    """``silo_parts`` as in-memory ``LocalSilo``s, for simulations and baselines."""
    from fedfunc.tasks.data import MemoryDataSource
    from fedfunc.tasks.simulation import LocalSilo

    return [LocalSilo.of(f"site-{i + 1}", MemoryDataSource(p.files(name)), f"{name}/")
            for i, p in enumerate(silo_parts(name, n_silos, alpha=alpha, seed=seed))]
