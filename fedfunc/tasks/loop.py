"""The platform's training and evaluation loops, with the hook points platform features act through.

- ``TrainingHook.wrap(model, optimizer, loader)``: replace the three before the first step — what Opacus'
  ``PrivacyEngine.make_private`` does for DP-SGD (it returns a wrapped module, optimizer and a Poisson
  data loader). The caller keeps its own reference to the model it built: wrapped modules share its
  parameters, so the update is read from the original module.
- ``TrainingHook.loss(loss, model)``: the loss the optimizer steps on — e.g. FedProx adds μ/2‖w − w_global‖².
- ``ExampleSink.add(targets, predictions, scores)``: every evaluated example's label, predicted class and
  scores, inside the silo — e.g. the per-example scores a paired model comparison needs.

A task with its own ``train`` step (``Task.own_training``) bypasses the loop, so training hooks cannot act
on it: ``train`` refuses it (``NeedsPlatformLoop``) rather than silently skip a hook.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fedfunc.evaluation import EvalFigures
from fedfunc.tasks.api import Task

EVAL_BATCH = 256


class TrainingHook(Protocol):
    name: str

    def wrap(self, model, optimizer, loader) -> tuple: ...
    def loss(self, loss: torch.Tensor, model: torch.nn.Module) -> torch.Tensor: ...


class ExampleSink(Protocol):
    def add(self, targets: torch.Tensor, predictions: torch.Tensor, scores: torch.Tensor) -> None: ...


class NeedsPlatformLoop(ValueError):
    """A feature that acts inside the platform's loop was asked of a task that trains with its own step."""

    def __init__(self, hooks: Sequence[TrainingHook]):
        names = ", ".join(h.name for h in hooks)
        super().__init__(f"the task defines its own train step, so it cannot run with {names}, "
                         "which act(s) inside the platform's training loop")


class TaskOutputError(ValueError):
    """The task's code returned something the loop cannot use (a non-finite loss, a class out of range)."""


@dataclass(frozen=True)
class TrainStats:
    loss: float          # mean loss of the last epoch
    num_samples: int     # examples trained on (FedAvg's weight)
    epochs: int


def train(task: Task, model: torch.nn.Module, dataset: Dataset, *, seed: int,
          hooks: Sequence[TrainingHook] = (), epochs: int | None = None) -> TrainStats:
    """Train ``model`` in place for ``epochs`` (default ``task.hp.epochs``); deterministic given ``seed``."""
    n = len(dataset)
    if n == 0:
        raise TaskOutputError("no training examples")
    epochs = epochs or task.hp.epochs
    torch.manual_seed(seed)
    if task.own_training:
        if hooks:
            raise NeedsPlatformLoop(hooks)
        stats = task.train(model, dataset, seed=seed)
        loss = float(stats["loss"]) if isinstance(stats, dict) and "loss" in stats else float("nan")
        return TrainStats(_finite(loss), n, epochs)
    loader = DataLoader(dataset, batch_size=task.hp.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = task.optimizer(model.parameters())
    stepped = model
    for hook in hooks:
        stepped, optimizer, loader = hook.wrap(stepped, optimizer, loader)
    stepped.train()
    epoch_loss = float("nan")
    for _ in range(epochs):
        total, count = 0.0, 0
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = task.loss(stepped(inputs), targets)
            for hook in hooks:
                loss = hook.loss(loss, stepped)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(targets)
            count += len(targets)
        epoch_loss = total / max(count, 1)
    return TrainStats(_finite(epoch_loss), n, epochs)


def _finite(loss: float) -> float:
    if not math.isfinite(loss):
        raise TaskOutputError(f"training diverged: loss {loss}")
    return loss


@torch.no_grad()
def evaluate(task: Task, model: torch.nn.Module, dataset: Dataset, *,
             sinks: Sequence[ExampleSink] = ()) -> EvalFigures:
    """Loss sum, count and confusion matrix of ``model`` on ``dataset`` (nothing per example leaves here)."""
    c = task.num_classes
    confusion = np.zeros((c, c), np.int64)
    loss_sum, n = 0.0, 0
    model.eval()
    for inputs, targets in DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False):
        t = _classes(targets, "label", c)
        outputs = model(inputs)
        loss_sum += float(task.loss(outputs, targets)) * len(targets)
        predictions, scores = task.predict(outputs)
        np.add.at(confusion, (t, _classes(predictions, "predicted class", c)), 1)
        n += len(t)
        for sink in sinks:
            sink.add(targets, predictions, scores)
    if not math.isfinite(loss_sum):
        raise TaskOutputError(f"evaluation loss is {loss_sum}")
    return EvalFigures(n, loss_sum, confusion)


def _classes(values: torch.Tensor, what: str, c: int) -> np.ndarray:
    """Class indices as int64, each in 0..c-1 (a task's labels or predictions)."""
    v = np.asarray(values.detach().cpu().numpy()).astype(np.int64).reshape(-1)
    if v.size and (v.min() < 0 or v.max() >= c):
        raise TaskOutputError(f"{what} {int(v.min() if v.min() < 0 else v.max())} is outside 0..{c - 1} "
                              f"(num_classes={c})")
    return v
