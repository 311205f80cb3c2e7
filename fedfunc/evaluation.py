"""Federated evaluation figures: what a silo may say about a model's performance on its test part.

Only aggregates leave a silo: the number of test examples, the summed loss and the confusion matrix
(rows: true class, columns: predicted class). They travel as ``evaluation.safetensors`` — numbers by
construction, a fixed set of three tensors bound to the job's run, round, silo and nonce — and pool
by addition, so the pooled accuracy over every silo's test part is exact, not an average of averages.
Numpy only: the orchestrator checks and pools these without any task code or torch.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fedfunc.weights import UpdateRejected, decode, encode, read_header

MAX_CLASSES = 256
KIND = "evaluation"
_TENSORS = {"num_examples": ("I64", ()), "loss_sum": ("F64", ())}
METADATA_KEYS = ("run", "round", "silo", "nonce", "kind")


def max_bytes(num_classes: int) -> int:
    """The size bound of an evaluation blob: header allowance plus its tensors."""
    return 4096 + 16 + 8 * num_classes * num_classes


@dataclass(frozen=True)
class EvalFigures:
    num_examples: int
    loss_sum: float
    confusion: np.ndarray  # (C, C) int64, rows = true class, columns = predicted class

    @classmethod
    def empty(cls, num_classes: int) -> EvalFigures:
        return cls(0, 0.0, np.zeros((num_classes, num_classes), np.int64))

    def __add__(self, other: EvalFigures) -> EvalFigures:
        if self.confusion.shape != other.confusion.shape:
            raise ValueError(f"cannot pool a {other.confusion.shape} confusion matrix into {self.confusion.shape}")
        return EvalFigures(self.num_examples + other.num_examples, self.loss_sum + other.loss_sum,
                           self.confusion + other.confusion)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion)) / self.num_examples if self.num_examples else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.num_examples if self.num_examples else float("nan")

    def summary(self, prefix: str = "") -> dict[str, float | int]:
        """Accuracy, mean loss and count, for status and reports (empty when there were no examples)."""
        if not self.num_examples:
            return {}
        return {f"{prefix}accuracy": self.accuracy, f"{prefix}loss": self.loss,
                f"{prefix}num_examples": self.num_examples}

    def to_json(self) -> dict:
        return {"num_examples": self.num_examples, "loss_sum": self.loss_sum, "confusion": self.confusion.tolist()}

    def encode(self, metadata: Mapping[str, str]) -> bytes:
        return encode({"num_examples": np.array(self.num_examples, np.int64),
                       "loss_sum": np.array(self.loss_sum, np.float64), "confusion": self.confusion.astype(np.int64)},
                      {**metadata, "kind": KIND})


def pool(figures: Iterable[EvalFigures], num_classes: int) -> EvalFigures:
    total = EvalFigures.empty(num_classes)
    for f in figures:
        total = total + f
    return total


def check_evaluation(data: bytes, *, num_classes: int, expected: Mapping[str, object]) -> EvalFigures:
    """The figures in an evaluation blob if it is exactly what a job of this round may publish.

    ``expected`` holds ``run``, ``round``, ``silo`` and ``nonce``. Raises ``UpdateRejected`` naming the rule
    (and the tensor) otherwise: size, header, metadata, tensor set, dtypes, shapes, value ranges, and the
    confusion matrix summing to the example count.
    """
    limit = max_bytes(num_classes)
    if len(data) > limit:
        raise UpdateRejected("size", f"{len(data)} bytes exceeds the {limit}-byte bound of an evaluation")
    header, metadata = read_header(data)
    for key in METADATA_KEYS:
        want = KIND if key == "kind" else str(expected[key])
        if metadata.get(key) != want:
            raise UpdateRejected(key, f"evaluation says {key}={metadata.get(key)!r}, expected {want!r}")
    shapes = {**_TENSORS, "confusion": ("I64", (num_classes, num_classes))}
    if set(header) != set(shapes):
        raise UpdateRejected("tensors", f"an evaluation holds exactly {sorted(shapes)}, got {sorted(header)}")
    for name, (dtype, shape) in shapes.items():
        if header[name]["dtype"] != dtype or tuple(header[name]["shape"]) != shape:
            raise UpdateRejected("shape", f"{header[name]['dtype']} {tuple(header[name]['shape'])}, "
                                 f"expected {dtype} {shape}", name)
    views, _ = decode(data)
    n, loss_sum, confusion = int(views["num_examples"]), float(views["loss_sum"]), views["confusion"].copy()
    if n < 1:
        raise UpdateRejected("num_examples", f"{n} test examples; an evaluation needs at least one", "num_examples")
    if not math.isfinite(loss_sum) or loss_sum < 0:
        raise UpdateRejected("loss_sum", f"{loss_sum} is not a finite, non-negative loss", "loss_sum")
    if (confusion < 0).any() or int(confusion.sum()) != n:
        raise UpdateRejected("confusion", f"counts must be ≥ 0 and sum to num_examples={n} "
                             f"(they sum to {int(confusion.sum())})", "confusion")
    return EvalFigures(n, loss_sum, confusion)
