"""What a task is: a model builder, a fixed dataset split, and the train / evaluate loops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from fedfunc.contracts import Hyperparams  # the one model of local training settings


@dataclass(frozen=True)
class Dataset:
    """A task's fixed split. ``x`` is float32, ``y`` int64; the orchestrator evaluates on the test part."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# Local optimizers by name; a fresh one is made each round (no optimizer state crosses rounds).
OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


class Task:
    """A classification task. Subclasses set ``name``, ``default_hyperparams`` and define
    ``build_model`` and ``load_dataset``; the training loop (cross-entropy, ``optimizer``) is shared
    so every task trains the same way in a silo job, in the centralized baseline and in simulation.
    """

    name: ClassVar[str]
    default_hyperparams: ClassVar[Hyperparams]
    # Rounds a default federated run of this task takes (the demo and the benches use it).
    default_rounds: ClassVar[int]
    optimizer: ClassVar[str] = "sgd"

    def build_model(self, seed: int) -> nn.Module:
        raise NotImplementedError

    def load_dataset(self) -> Dataset:
        raise NotImplementedError

    def train(self, model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
              batch_size: int, seed: int) -> dict[str, float | int]:
        """Train in place; deterministic given ``seed`` (shuffling uses its own generator).

        Returns the mean loss of the last epoch and the number of samples trained on (FedAvg's weight).
        """
        if len(x) == 0:
            raise ValueError(f"task {self.name}: cannot train on 0 samples")
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        xt, yt = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y, dtype=np.int64))
        opt = OPTIMIZERS[self.optimizer](model.parameters(), lr)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        epoch_loss = float("nan")
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for start in range(0, len(xt), batch_size):
                idx = order[start:start + batch_size]
                opt.zero_grad()
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            epoch_loss = total / len(xt)
        return {"loss": epoch_loss, "num_samples": len(xt)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float | int]:
        """Mean cross-entropy and accuracy on (x, y)."""
        model.eval()
        xt, yt = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(np.asarray(y, dtype=np.int64))
        logits = model(xt)
        return {"loss": float(nn.functional.cross_entropy(logits, yt)),
                "accuracy": float((logits.argmax(1) == yt).float().mean()),
                "num_samples": len(yt)}


def split(x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int) -> Dataset:
    """A fixed, stratified, seeded train/test split with the dtypes storage expects."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    f32, i64 = np.float32, np.int64
    return Dataset(x_tr.astype(f32), y_tr.astype(i64), x_te.astype(f32), y_te.astype(i64))
