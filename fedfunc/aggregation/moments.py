"""The state of the server optimizers (FedAvgM, FedAdam, FedYogi, FedAdagrad): per-tensor moments.

Layout: one float32 array ``"{moment}/{tensor}"`` per moment and floating tensor of the model, and the
scalar ``step`` (optimizer steps taken). Before the first step the arrays are absent (zeros), so the
first round's state blob is a few bytes. Integer buffers (step counters) have no moments.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedfunc.aggregation.state import State, StateError


def initial(names: Sequence[str]) -> State:
    return State({}, {"step": 0}) if names else State()


def floating(global_arrays: Mapping[str, np.ndarray]) -> list[str]:
    return sorted(k for k, a in global_arrays.items() if np.issubdtype(np.asarray(a).dtype, np.floating))


def check(strategy: str, state: State, global_arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> int:
    """The step the state is at; ``StateError`` naming the first thing that does not fit the model."""
    if not names:
        if state.arrays or state.scalars:
            raise StateError(f"{strategy} (with these options) keeps no state, but the state holds "
                             f"{sorted([*state.arrays, *state.scalars])[:5]}")
        return 0
    step = state.scalars.get("step")
    if type(step) is not int or step < 0 or set(state.scalars) != {"step"}:
        raise StateError(f"{strategy} state: scalars must be exactly {{'step': int ≥ 0}}, got {dict(state.scalars)}")
    expected = {f"{m}/{t}": np.shape(global_arrays[t]) for m in names for t in floating(global_arrays)}
    if step == 0 and not state.arrays:
        return 0
    missing = sorted(expected.keys() - state.arrays.keys())
    extra = sorted(state.arrays.keys() - expected.keys())
    if missing or extra:
        raise StateError(f"{strategy} state at step {step}: missing arrays {missing[:5]}, unexpected {extra[:5]}")
    for key, shape in expected.items():
        a = state.arrays[key]
        if a.shape != shape or a.dtype != np.float32:
            raise StateError(f"{strategy} state: {key!r} is {a.dtype}{list(a.shape)}, the model needs float32{list(shape)}")
    return step


def fresh(global_arrays: Mapping[str, np.ndarray], names: Sequence[str], step: int) -> State:
    """Zeroed moments for the next state (filled block by block) at ``step``."""
    if not names:
        return State()
    return State({f"{m}/{t}": np.zeros(np.shape(global_arrays[t]), np.float32)
                  for m in names for t in floating(global_arrays)}, {"step": step})


def block(state: State, moment: str, tensor: str, start: int, stop: int) -> np.ndarray | None:
    """The previous value of a moment's block, or None before the first step (zeros)."""
    a = state.arrays.get(f"{moment}/{tensor}")
    return None if a is None else a.reshape(-1)[start:stop]


def put(state: State, moment: str, tensor: str, start: int, values: np.ndarray) -> None:
    state.arrays[f"{moment}/{tensor}"].reshape(-1)[start:start + values.size] = values
