"""The centralized baseline: one model trained on the union of the training data (no federation)."""
from __future__ import annotations

from fedfunc.tasks.base import Task


def train_centralized(task: Task, *, epochs: int, lr: float, batch_size: int, seed: int) -> dict[str, float | int]:
    """Train ``task``'s model on its whole training split; return metrics on the held-out test split."""
    data = task.load_dataset()
    model = task.build_model(seed)
    task.train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return task.evaluate(model, data.x_test, data.y_test)
