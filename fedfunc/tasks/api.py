"""The task API: what a scientist writes to federate their own model on their partners' data.

A task is a folder (``fedfunc task new`` makes one): ``task.toml`` names it, its entry point
(``module:Class``) and its Python requirements; its modules define one ``Task`` subclass. The task
supplies only what is specific to it —

- ``Hyperparams``: a pydantic schema extending the platform's (epochs, lr, batch_size, seed);
- ``num_classes``: the classes its model predicts (for the confusion matrix silos report);
- ``build_model()``: the ``torch.nn.Module``;
- ``read_data(reader)``: a ``torch.utils.data.Dataset`` of ``(input, label)`` from one part (train or
  test) of a silo's data, through a ``fedfunc.tasks.data.DataReader``;
- optionally ``loss``, ``optimizer``, ``predict`` (defaults: cross-entropy, SGD at ``lr``, softmax/argmax).

The platform owns the training and evaluation loops (``fedfunc.tasks.loop``), so platform features act
inside them: a loss term (FedProx), the optimizer and data loader wrapped (Opacus DP-SGD), per-example
scores out of evaluation (paired model comparison). A task that defines its own ``train`` step gets
``own_training = True``; features that need the platform's loop refuse such a task with that reason.

Task code runs only inside silo jobs (and on the scientist's machine when signing or trying it), never in
the orchestrator. It is imported from the signed bundle's verified bytes: import sibling modules of the
task folder relatively (``from .model import Net``).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from fedfunc.contracts import Hyperparams
from fedfunc.tasks.data import DataError, DataReader

__all__ = ["DataError", "DataReader", "Hyperparams", "Task", "array_dataset"]

REQUIRED = ("build_model", "read_data")


class Task:
    """Subclass it; see the module docstring. An instance holds its validated hyper-parameters in ``hp``."""

    Hyperparams: ClassVar[type[Hyperparams]] = Hyperparams
    num_classes: ClassVar[int]
    own_training: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "train" in cls.__dict__:
            cls.own_training = True

    def __init__(self, hp: Hyperparams):
        self.hp = hp

    def build_model(self) -> nn.Module:
        """The model; the platform seeds torch with ``hp.seed`` first."""
        raise NotImplementedError

    def read_data(self, reader: DataReader) -> Dataset:
        """The examples of one part of a silo's data, as ``(input, label)`` pairs (label an int class)."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss over a batch."""
        return nn.functional.cross_entropy(outputs, targets)

    def optimizer(self, parameters) -> torch.optim.Optimizer:
        """A fresh optimizer each round (no optimizer state crosses rounds)."""
        return torch.optim.SGD(parameters, lr=self.hp.lr)

    def predict(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example predicted class (n,) and scores (n, num_classes) from a batch's outputs."""
        scores = torch.softmax(outputs, dim=1)
        return scores.argmax(dim=1), scores

    # A task may also define ``train(self, model, dataset, *, seed) -> {"loss": float}`` to replace the
    # platform's training loop; it then has ``own_training = True`` (see the module docstring).


def array_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """``(x float32, y int64)`` pairs from arrays, the common case of ``read_data``."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows, y has {len(y)}")
    return TensorDataset(torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y, np.int64)))
