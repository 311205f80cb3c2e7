"""Wisconsin breast cancer (scikit-learn's bundled set): 30 tabular features, benign vs malignant.

Silo data: safetensors files under ``train/`` and ``test/`` with ``x`` (float32, n × 30, raw
measurements) and ``y`` (int64, 0 malignant / 1 benign).

Feature scaling, FL-honestly: the usual StandardScaler needs the mean and std over all the data,
i.e. a statistic of every silo's data, which would have to leave the silos. Instead the model
starts with a fixed ``log(x + LOG_FLOOR)``: the features are non-negative sizes, areas and ratios
spanning ~0.001..4000, and the log brings each to a range a few units wide using no data statistic
(``log1p`` would flatten the small ratios, e.g. concavity 0..0.4, to near-constants). A learned
per-feature affine layer follows — a normalisation layer whose scale and shift are ordinary
parameters, averaged by FedAvg like any other — and Adam, whose per-parameter step sizes absorb the
remaining differences of scale. Silo data stays raw; the transform travels with the model.
"""
import torch
from torch import nn

from fedfunc.tasks.api import Hyperparams, Task, array_dataset

N_FEATURES = 30
# Keeps exact zeros (e.g. concavity 0) finite; below the smallest non-zero measurements' scale.
LOG_FLOOR = 1e-3


class LogTransform(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.clamp_min(0) + LOG_FLOOR)


class FeatureAffine(nn.Module):
    """Learned per-feature scale and shift (a normalisation layer whose 'statistics' are trained)."""

    def __init__(self, n: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))
        self.shift = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class BreastCancerHyperparams(Hyperparams):
    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 16


class BreastCancer(Task):
    Hyperparams = BreastCancerHyperparams
    num_classes = 2

    def build_model(self) -> nn.Module:
        return nn.Sequential(LogTransform(), FeatureAffine(N_FEATURES), nn.Linear(N_FEATURES, 16), nn.ReLU(),
                             nn.Linear(16, 2))

    def read_data(self, reader):
        arrays = reader.concat_arrays("*.safetensors", ("x", "y"))
        return array_dataset(arrays["x"], arrays["y"])

    def optimizer(self, parameters):
        return torch.optim.Adam(parameters, lr=self.hp.lr)
