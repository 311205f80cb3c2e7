"""8×8 handwritten digits (scikit-learn's bundled set), 10 classes, a small MLP."""
from __future__ import annotations

import torch
from torch import nn

from fedfunc.contracts import Hyperparams
from fedfunc.tasks.base import Dataset, Task, split

# Pixel intensities are 0..16 by construction of the dataset, so dividing by this constant scales
# to [0, 1] without any statistic of anyone's data.
PIXEL_MAX = 16.0


class Digits(Task):
    name = "digits"
    default_hyperparams = Hyperparams(epochs=2, lr=0.05, batch_size=16)
    default_rounds = 10

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def load_dataset(self) -> Dataset:
        from sklearn.datasets import load_digits  # here, not at import: silo jobs never load it

        d = load_digits()
        return split(d.data / PIXEL_MAX, d.target, test_fraction=0.25, seed=0)
