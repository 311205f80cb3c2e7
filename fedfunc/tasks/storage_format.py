"""(x, y) arrays as safetensors bytes — the form of silo training data and the held-out eval set."""
from __future__ import annotations

import numpy as np

from fedfunc.weights import decode, encode


def xy_to_bytes(x: np.ndarray, y: np.ndarray, metadata: dict[str, str] | None = None) -> bytes:
    """``x`` as float32 and ``y`` as int64 in one safetensors file."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    return encode({"x": np.asarray(x, dtype=np.float32), "y": np.asarray(y, dtype=np.int64)}, metadata)


def xy_from_bytes(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``xy_to_bytes``; errors name the missing or mistyped array."""
    arrays, _ = decode(data)
    for name, dtype in (("x", np.float32), ("y", np.int64)):
        if name not in arrays:
            raise ValueError(f"dataset file lacks array {name!r} (has {sorted(arrays)})")
        if arrays[name].dtype != dtype:
            raise ValueError(f"dataset array {name!r} is {arrays[name].dtype}, expected {np.dtype(dtype).name}")
    if len(arrays["x"]) != len(arrays["y"]):
        raise ValueError(f"dataset x has {len(arrays['x'])} rows but y has {len(arrays['y'])}")
    return arrays["x"], arrays["y"]
