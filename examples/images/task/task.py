"""Handwritten digits from image files: each silo holds PNG (or JPEG, …) files in one folder per class,
``<label>/<anything>.png``, and a small convolutional network learns to read them.

The images are grey-scale; any size is resized to SIZE × SIZE, so silos need not agree on a resolution.
"""
import numpy as np
import torch
from pydantic import Field
from torch import nn

from fedfunc.tasks.api import DataError, Hyperparams, Task, array_dataset

SIZE = 8
CLASSES = [str(d) for d in range(10)]


class ImagesHyperparams(Hyperparams):
    epochs: int = 2
    lr: float = 0.05
    batch_size: int = 16
    channels: int = Field(16, ge=1, le=256, description="feature maps of the first convolution")


class Images(Task):
    Hyperparams = ImagesHyperparams
    num_classes = len(CLASSES)

    def build_model(self) -> nn.Module:
        c = self.hp.channels
        return nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * c * (SIZE // 2) ** 2, self.num_classes))

    def read_data(self, reader):
        from PIL import Image

        images, labels = [], []
        for name in reader.files("*/*"):
            label = name.split("/")[0]
            if label not in CLASSES:
                raise DataError(reader.label + name, f"folder {label!r} is not a class ({CLASSES})")
            img = reader.image(name, mode="L")
            if img.shape != (SIZE, SIZE):
                img = np.asarray(Image.fromarray(img).resize((SIZE, SIZE)))
            images.append(img)
            labels.append(CLASSES.index(label))
        if not images:
            raise DataError(reader.label, "no images (expected <label>/<file>.png)")
        x = np.stack(images).astype(np.float32)[:, None] / 255.0
        return array_dataset(x, np.array(labels))

    def optimizer(self, parameters):
        return torch.optim.SGD(parameters, lr=self.hp.lr, momentum=0.9)
