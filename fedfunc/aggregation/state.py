"""A strategy's state between rounds (optimizer moments, momentum, clipping estimates), as bytes.

The coordinator stores one state blob per run and round and hands it to the next round, so a run
resumed after a crash or ``continue_as_new`` continues with exactly the state it had. The blob is
safetensors: the arrays as tensors; the small scalars, the strategy that wrote it (name, options,
wrappers) and a SHA-256 of the tensor data in the metadata. Reading back checks all three, so a
missing, truncated, altered or foreign state is an error — never a silent restart of the optimizer.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedfunc import weights

Scalar = int | float | str | bool
_META_KEY = "fedfunc_state"


class StateError(ValueError):
    """A strategy state that cannot be used; the message says which and why."""


class StateMissing(StateError):
    pass


class StateCorrupt(StateError):
    pass


@dataclass(frozen=True)
class State:
    """Arrays (named; a wrapper prefixes its own names) and JSON scalars. Never mutated by a strategy:
    ``aggregate_round`` returns a new one, which is what makes a round a pure function."""

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    scalars: Mapping[str, Scalar] = field(default_factory=dict)


def encode_state(state: State, strategy: Mapping[str, Any]) -> bytes:
    """Canonical safetensors bytes (the same state gives the same bytes, so a retried write is harmless).
    ``strategy`` is ``Strategy.describe()`` of the strategy that produced the state."""
    bad = [k for k, v in state.scalars.items() if not isinstance(v, Scalar)
           or (isinstance(v, float) and not math.isfinite(v))]
    if bad:
        raise StateError(f"state scalars must be finite int, float, str or bool; not: {bad}")
    doc = {"strategy": strategy, "scalars": dict(state.scalars), "sha256": _digest(state.arrays)}
    return weights.encode(state.arrays, {_META_KEY: json.dumps(doc, sort_keys=True)})


def decode_state(data: bytes | None, strategy: Mapping[str, Any]) -> State:
    """The state in ``data``, written by the same ``strategy`` (name, options, wrappers)."""
    if not data:
        raise StateMissing(f"no strategy state for {strategy['name']}: the previous round's state blob is "
                           f"missing or empty (the run cannot resume without it)")
    try:
        arrays, metadata = weights.decode(data)
        doc = json.loads(metadata[_META_KEY])
        scalars, recorded, digest = doc["scalars"], doc["strategy"], doc["sha256"]
    except (weights.UpdateRejected, KeyError, TypeError, json.JSONDecodeError) as e:
        raise StateCorrupt(f"strategy state for {strategy['name']} is not a readable state blob ({e})") from None
    if recorded != json.loads(json.dumps(strategy)):
        raise StateError(f"strategy state was written by {json.dumps(recorded, sort_keys=True)}, "
                         f"this run uses {json.dumps(strategy, sort_keys=True)}")
    if _digest(arrays) != digest:
        raise StateCorrupt(f"strategy state for {strategy['name']}: tensor data does not match its recorded sha256")
    return State(arrays, scalars)


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order (safetensors has no checksum)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.require(arrays[name], requirements="C")
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
