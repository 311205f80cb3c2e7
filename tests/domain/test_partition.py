"""Partition properties: disjoint, covering, minimum size, seeded, skewed when asked."""
from __future__ import annotations

import numpy as np
import pytest

from fedfunc.tasks.partition import partition

Y = np.repeat(np.arange(10), 100)


def assert_disjoint_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("alpha", [None, 0.1, 0.5, 100.0])
@pytest.mark.parametrize("n_silos", [1, 3, 7])
def test_disjoint_covering_and_minimum(alpha, n_silos):
    parts = partition(Y, n_silos, alpha=alpha, seed=1, min_samples=20)
    assert len(parts) == n_silos
    assert_disjoint_cover(parts, len(Y))
    assert min(len(p) for p in parts) >= 20


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_seeded(alpha):
    a = partition(Y, 5, alpha=alpha, seed=4)
    b = partition(Y, 5, alpha=alpha, seed=4)
    c = partition(Y, 5, alpha=alpha, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_is_balanced_in_size_and_labels():
    parts = partition(Y, 4, alpha=None, seed=0)
    assert {len(p) for p in parts} == {250}
    for p in parts:
        assert np.bincount(Y[p], minlength=10).min() > 10


def _label_skew(parts):
    """Mean total-variation distance between each silo's label mix and the global one."""
    glob = np.bincount(Y, minlength=10) / len(Y)
    return np.mean([0.5 * np.abs(np.bincount(Y[p], minlength=10) / len(p) - glob).sum() for p in parts])


def test_small_alpha_skews_labels_more_than_large_alpha():
    assert _label_skew(partition(Y, 5, alpha=0.1, seed=0)) > 0.4
    assert _label_skew(partition(Y, 5, alpha=100.0, seed=0)) < 0.1
    assert _label_skew(partition(Y, 5, alpha=None, seed=0)) < 0.1


def test_minimum_is_enforced_by_redrawing():
    # α = 0.05 over 10 silos almost always starves someone; the redraw must still meet the minimum.
    parts = partition(Y, 10, alpha=0.05, seed=0, min_samples=30)
    assert min(len(p) for p in parts) >= 30
    assert_disjoint_cover(parts, len(Y))


@pytest.mark.parametrize("kwargs,match", [
    ({"n_silos": 0, "alpha": None}, "n_silos"),
    ({"n_silos": 200, "alpha": None}, "cannot give 200 silos"),
    ({"n_silos": 3, "alpha": 0.0}, "alpha"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        partition(Y, seed=0, **kwargs)
