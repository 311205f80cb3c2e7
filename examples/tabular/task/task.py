"""Breast-cancer diagnosis from a table: 30 measurements per patient and a "diagnosis" column
("malignant" or "benign"), in CSV or Parquet files, any number of them, in each silo.

The model never sees a statistic of anyone's data: a fixed log transform brings the measurements
(sizes, areas, ratios spanning 0.001..4000) to a few units, a learned per-feature scale and shift
follows, then a small MLP; Adam absorbs the remaining differences of scale.
"""
import numpy as np
import torch
from pydantic import Field
from torch import nn

from fedfunc.tasks.api import DataError, Hyperparams, Task, array_dataset

from .columns import FEATURES, LABEL, LABELS


class LogFeatures(nn.Module):
    def forward(self, x):
        return torch.log(x.clamp_min(0) + 1e-3)


class Affine(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))
        self.shift = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return x * self.scale + self.shift


class TabularHyperparams(Hyperparams):
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 8
    hidden: int = Field(16, ge=1, le=1024)


class Tabular(Task):
    Hyperparams = TabularHyperparams
    num_classes = len(LABELS)

    def build_model(self) -> nn.Module:
        n = len(FEATURES)
        return nn.Sequential(LogFeatures(), Affine(n), nn.Linear(n, self.hp.hidden), nn.ReLU(),
                             nn.Linear(self.hp.hidden, self.num_classes))

    def read_data(self, reader):
        table = reader.table("*", {**{c: "float32" for c in FEATURES}, LABEL: "str"})
        unknown = sorted(set(table[LABEL]) - set(LABELS))
        if unknown:
            raise DataError(reader.label, f"column {LABEL!r} has values {unknown[:5]}, expected one of {LABELS}")
        y = np.array([LABELS.index(v) for v in table[LABEL]], np.int64)
        return array_dataset(np.stack([table[c] for c in FEATURES], axis=1), y)

    def optimizer(self, parameters):
        return torch.optim.Adam(parameters, lr=self.hp.lr)
