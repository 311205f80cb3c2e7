"""The centralized baseline: one model trained on the union of the training data (no federation)."""
from __future__ import annotations

from fedfunc.tasks.base import Task


def centralized_curve(task: Task, *, rounds: int, epochs: int, lr: float, batch_size: int,
                      seed: int) -> list[dict]:
    """Held-out metrics after each of ``rounds`` blocks of ``epochs`` epochs on all training data.

    A block mirrors a federated round (the same epochs per round, a fresh optimizer each time), so
    "rounds to accuracy" can be compared with a federated run epoch for epoch.
    """
    data = task.load_dataset()
    model = task.build_model(seed)
    history = []
    for round_ in range(1, rounds + 1):
        task.train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size,
                   seed=seed + round_)
        history.append({"round": round_, **task.evaluate(model, data.x_test, data.y_test)})
    return history


def train_centralized(task: Task, *, epochs: int, lr: float, batch_size: int, seed: int) -> dict[str, float | int]:
    """Train ``task``'s model on its whole training split for ``epochs``; metrics on the held-out split."""
    return centralized_curve(task, rounds=1, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)[-1]
