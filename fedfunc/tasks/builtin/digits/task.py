"""8×8 handwritten digits (scikit-learn's bundled set), 10 classes, a small MLP.

Silo data: safetensors files under ``train/`` and ``test/`` with ``x`` (float32, n × 64, pixel
intensities 0..16) and ``y`` (int64 labels 0..9).
"""
from pydantic import Field
from torch import nn, optim

from fedfunc.tasks.api import DataError, Hyperparams, Task, array_dataset

# Pixel intensities are 0..16 by construction of the dataset, so dividing by this constant scales
# to [0, 1] without any statistic of anyone's data.
PIXEL_MAX = 16.0


class DigitsHyperparams(Hyperparams):
    epochs: int = 2
    lr: float = 0.05
    batch_size: int = 16
    hidden: int = Field(64, ge=1, le=4096, description="width of the hidden layer")


class Digits(Task):
    Hyperparams = DigitsHyperparams
    num_classes = 10

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, self.hp.hidden), nn.ReLU(), nn.Linear(self.hp.hidden, 10))

    def read_data(self, reader):
        arrays = reader.concat_arrays("*.safetensors", ("x", "y"))
        x = arrays["x"]
        if x.ndim < 2 or x[0].size != 64:
            raise DataError(reader.label + "*.safetensors", f"x has shape {x.shape}, expected (n, 64) pixel intensities")
        return array_dataset(x.reshape(len(x), 64) / PIXEL_MAX, arrays["y"])

    def optimizer(self, parameters):
        return optim.SGD(parameters, lr=self.hp.lr, momentum=0.9)
