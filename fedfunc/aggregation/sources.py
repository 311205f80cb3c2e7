"""Update sources: a round's updates, readable any number of times and in coordinate blocks.

Robust rules need every update at each coordinate (a median is not a running sum), and order-free
exact FedAvg sums the updates in a fixed order; both read block by block — (tensor, element range)
of every update — so memory stays O(updates × block + model), never O(updates × model).

An update source is a sequence of ``BlockUpdate``s. Three kinds:
- ``fedfunc.weights.ValidatedUpdate``: an update validated in memory (zero-copy blocks);
- ``RangeUpdate``: an update behind ``read(offset, length) -> bytes`` (a blob's range reads, a
  file's ``pread``, a memoryview slice), whose header is checked when it is opened and whose
  values are checked by the strategy's block pass (``values_checked = False``);
- ``MemoryUpdate``: plain arrays (tests, in-process simulation).
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from fedfunc.weights import ModelManifest, UpdateRejected, check_update_header

RangeRead = Callable[[int, int], bytes]


class BlockUpdate(Protocol):
    """One update of a source. ``key`` is unique in the round (the silo): strategies combine
    updates in key order, which is what makes a result independent of the order they arrived in."""

    @property
    def key(self) -> str: ...

    @property
    def num_samples(self) -> int: ...

    @property
    def values_checked(self) -> bool:
        """True if the finiteness and norm rules already ran on its values."""

    def read(self, tensor: str, start: int, stop: int) -> np.ndarray:
        """Elements ``start:stop`` of the flattened ``tensor`` (1-D, the model's dtype)."""


@dataclass(frozen=True)
class MemoryUpdate:
    key: str
    num_samples: int
    arrays: Mapping[str, np.ndarray]
    values_checked: bool = False

    def read(self, tensor: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.arrays[tensor]).reshape(-1)[start:stop]


class RangeUpdate:
    """An update read by byte ranges. Opening it reads the 8-byte length and the JSON header (two
    reads) and applies every rule of ``validate_update`` that needs no tensor value (size, header,
    metadata and the round's identity, names/shapes/dtypes, layout); ``read`` then fetches exactly the
    bytes of one block. ``size`` is the blob's size (from its properties or listing)."""

    values_checked = False

    def __init__(self, read: RangeRead, size: int, manifest: ModelManifest, *, expected: Mapping[str, object],
                 max_bytes: int | None = None):
        self._read = read
        if size < 8:
            raise UpdateRejected("not_safetensors", f"{size} bytes is shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", self._exact(0, 8))
        if n > size - 8:
            raise UpdateRejected("not_safetensors", f"header length {n} exceeds the {size}-byte file")
        header = check_update_header(self._exact(0, 8 + n), size, manifest, expected=expected, max_bytes=max_bytes)
        self.key, self.num_samples, self.metadata = header.metadata["silo"], header.num_samples, header.metadata
        self._layout = header.layout

    def read(self, tensor: str, start: int, stop: int) -> np.ndarray:
        t = self._layout[tensor]
        size = t.dtype.itemsize
        return np.frombuffer(self._exact(t.offset + start * size, (stop - start) * size), dtype=t.dtype)

    def _exact(self, offset: int, length: int) -> bytes:
        data = self._read(offset, length)
        if len(data) != length:
            raise UpdateRejected("short_read", f"asked for {length} bytes at offset {offset}, got {len(data)}")
        return data


@dataclass(frozen=True)
class CheckedUpdate:
    """An update whose values already passed the rules (in an earlier pass), read through as is."""

    inner: BlockUpdate
    values_checked: ClassVar[bool] = True

    @property
    def key(self) -> str:
        return self.inner.key

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def read(self, tensor: str, start: int, stop: int) -> np.ndarray:
        return self.inner.read(tensor, start, stop)


def in_key_order(updates: Sequence[BlockUpdate]) -> list[BlockUpdate]:
    """The updates sorted by key; a key twice is an error (one update per silo and round)."""
    ordered = sorted(updates, key=lambda u: u.key)
    twice = sorted({a.key for a, b in zip(ordered, ordered[1:]) if a.key == b.key})
    if twice:
        raise ValueError(f"more than one update from {twice}")
    return ordered


def block_ranges(global_arrays: Mapping[str, np.ndarray], block_elems: int) -> Iterator[tuple[str, int, int]]:
    """(tensor, start, stop) covering every tensor, in name order, ``block_elems`` at a time."""
    for name in sorted(global_arrays):
        size = int(np.size(global_arrays[name]))
        for start in range(0, size, block_elems):
            yield name, start, min(start + block_elems, size)
