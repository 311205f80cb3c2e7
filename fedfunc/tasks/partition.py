"""Split a training set across simulated silos: IID, or label-skewed with Dirichlet(α)."""
from __future__ import annotations

import numpy as np

MAX_ATTEMPTS = 1000


def partition(y: np.ndarray, n_silos: int, *, alpha: float | None, seed: int,
              min_samples: int = 10) -> list[np.ndarray]:
    """Disjoint, covering index sets, one per silo, each with ≥ ``min_samples`` indices (sorted).

    ``alpha=None``: IID (a seeded shuffle cut into near-equal parts). Otherwise each class is spread
    over the silos in proportions drawn from Dirichlet(α·1) — small α, strong label skew. Draws that
    leave a silo under ``min_samples`` are redrawn from the same seeded generator, so the result is a
    function of (y, n_silos, alpha, seed, min_samples).
    """
    y = np.asarray(y)
    if n_silos < 1:
        raise ValueError(f"n_silos={n_silos} must be ≥ 1")
    if n_silos * min_samples > len(y):
        raise ValueError(f"{len(y)} samples cannot give {n_silos} silos ≥ {min_samples} samples each")
    if alpha is not None and alpha <= 0:
        raise ValueError(f"alpha={alpha} must be > 0 (or None for IID)")
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), n_silos)]
    for _ in range(MAX_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_silos)]
        for label in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_silos, alpha)))[:-1] * len(idx)).astype(int)
            for silo, chunk in enumerate(np.split(idx, cuts)):
                parts[silo].append(chunk)
        silos = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in silos) >= min_samples:
            return silos
    raise ValueError(f"no Dirichlet(α={alpha}) draw gave every one of {n_silos} silos ≥ {min_samples} "
                     f"samples in {MAX_ATTEMPTS} attempts; raise alpha or lower min_samples")
