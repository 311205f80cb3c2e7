"""The strategy interface (Flower-like), its options, and the block pass every strategy reads through.

A round's aggregation is a pure function:
``strategy.aggregate_round(global_arrays, updates, state) -> Aggregation(arrays, state, ...)``.
Nothing lives on the strategy object between rounds (it holds only its validated options), so the
coordinator can store ``Aggregation.state`` (``state.encode_state``), rebuild everything after a
crash and get the same bits. Updates are combined in key order, so arrival order never matters.

Attributes the edge and the round read without running anything:
- ``needs_individual_updates``: True for rules that look at each update in the clear (robust rules,
  server-side clipping). They cannot run under secure aggregation, where the server sees only a sum.
- ``requires_silo_config``: settings the signed bundle must carry for the silo side (FedProx's μ).
- ``stateful``: the strategy's state must be carried from round to round.
- ``min_updates()`` / ``check_count(n)``: how many updates a round needs (a robust rule with too few
  is no longer robust); called at the edge with the run's silo count and by the round.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fedfunc.aggregation.sources import BlockUpdate, CheckedUpdate, block_ranges, in_key_order
from fedfunc.aggregation.state import State, StateError, StateMissing
from fedfunc.kernels import compilable, sumsq
from fedfunc.validation import describe
from fedfunc.weights import UpdateRejected, check_value_sums

# Elements per block: a float64 accumulator of 1 MB stays in the core's cache while updates stream past.
BLOCK_ELEMS = 1 << 17
# Bytes of one block of every update: with many updates, blocks shrink so that the blocks in flight
# stay well under one model (at 100 updates of 10M float32: 40K elements, 16 MB per block set).
READ_BUDGET = 16 << 20
# Bytes of the (updates × columns) stack that coordinate-wise rules sort or compare at a time.
STACK_BYTES = 4 << 20


class StrategyOptionError(ValueError):
    """Options a strategy cannot run with; the message names the strategy and the option."""


class TooFewUpdates(ValueError):
    """A round (or a run's silo count) below what the rule needs; names the rule and the counts."""

    def __init__(self, rule: str, count: int, needed: int, why: str):
        self.rule, self.count, self.needed = rule, count, needed
        self.rejected: dict[str, UpdateRejected] = {}  # updates the value rules took out before the count fell
        super().__init__(f"{rule} needs at least {needed} updates ({why}); got {count}")


class Options(BaseModel):
    """Base of every strategy's options: unknown options are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Aggregation:
    """What a round's aggregation produced. ``accepted`` passed the value rules (``rejected`` did
    not, with the rule); ``selected`` are the updates whose values entered the model (Krum keeps
    some of the accepted ones; every other rule uses all)."""

    arrays: dict[str, np.ndarray]
    state: State
    accepted: list[str]
    rejected: dict[str, UpdateRejected] = field(default_factory=dict)
    selected: list[str] = field(default_factory=list)
    norms: dict[str, float] = field(default_factory=dict)  # ‖update − global‖₂ of the accepted updates measured


class Strategy:
    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    stateful: ClassVar[bool] = False
    needs_individual_updates: ClassVar[bool] = False
    requires_silo_config: ClassVar[frozenset[str]] = frozenset()
    block_elems: int = BLOCK_ELEMS

    def __init__(self, options: Options | Mapping[str, Any] | None = None, **kwargs: Any):
        raw = options.model_dump() if isinstance(options, BaseModel) else dict(options or {})
        try:
            self.options = self.Options.model_validate({**raw, **kwargs})
        except ValidationError as e:
            raise StrategyOptionError(f"{self.name} options: {describe(e)}") from None

    def describe(self) -> dict[str, Any]:
        """Name and options as the run spec and the report show them; also the state's fingerprint."""
        return {"name": self.name, "options": self.options.model_dump(mode="json")}

    def __repr__(self) -> str:
        return json.dumps(self.describe(), sort_keys=True)

    # -- counts and state -----------------------------------------------------------------------

    def min_updates(self) -> int:
        return 1

    def check_count(self, n: int) -> None:
        """Raise ``TooFewUpdates`` (or ``StrategyOptionError``) if ``n`` updates are not enough."""
        if n < self.min_updates():
            raise TooFewUpdates(self.name, n, self.min_updates(), "to aggregate at all")

    def configure_round(self, round_: int, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
        """The local hyper-parameters sent to silos in a round (default: unchanged)."""
        return dict(hyperparams)

    def initial_state(self, global_arrays: Mapping[str, np.ndarray]) -> State:
        """The state before the first round (stored by the run's first step like any other round's)."""
        return State()

    def check_state(self, state: State, global_arrays: Mapping[str, np.ndarray]) -> None:
        """Raise ``StateError`` naming what is wrong if ``state`` cannot be this strategy's."""
        if state.arrays or state.scalars:
            raise StateError(f"{self.name} keeps no state, but the state holds "
                             f"{sorted([*state.arrays, *state.scalars])[:5]}")

    # -- aggregation ----------------------------------------------------------------------------

    def aggregate_round(self, global_arrays: Mapping[str, np.ndarray], updates: Sequence[BlockUpdate],
                        state: State | None = None, *, max_norm: float | None = None,
                        block_elems: int | None = None, readers: int = 0) -> Aggregation:
        """The next global arrays and state from the round's updates and the previous state.

        Updates whose values were not checked yet (``RangeUpdate``) get the finiteness rule and, with
        ``max_norm``, the bound on ‖update − global‖₂, inside the strategy's own pass over the blocks;
        an update that fails is reported in ``rejected`` and the pass runs again without it (the
        result is exactly what the accepted updates alone give). ``block_elems`` sets the block
        (elements of one tensor per read); ``readers`` > 0 reads the next block of every update on that
        many threads while the current one is combined (for range reads that wait on I/O). Raises
        ``TooFewUpdates`` if fewer updates are left than the rule needs, ``StateError`` for a missing
        or mismatched state; an error from a ``read`` itself (a blob gone) propagates.
        """
        if state is None:
            if self.stateful:
                raise StateMissing(f"{self.name} carries state from round to round: pass the previous round's "
                                   f"state (initial_state() before the first round)")
            state = State()
        self.check_state(state, global_arrays)
        ordered = in_key_order(updates)
        rejected: dict[str, UpdateRejected] = {}
        norms: dict[str, float] = {}
        while True:
            try:
                self.check_count(len(ordered))
            except TooFewUpdates as e:
                e.rejected = rejected
                raise
            block = block_elems or block_for(len(ordered), self.block_elems)
            blocks = BlockPass(global_arrays, ordered, block, max_norm, readers=readers)
            arrays, new_state, selected = self._aggregate(global_arrays, ordered, state, blocks)
            failed = blocks.failures()
            norms.update({k: math.sqrt(v) for k, v in blocks.sq_distances().items() if k not in failed})
            if not failed:
                keys = [u.key for u in ordered]
                return Aggregation(arrays, new_state, keys, rejected, selected, {k: norms[k] for k in keys if k in norms})
            rejected.update(failed)
            ordered = [CheckedUpdate(u) for u in ordered if u.key not in failed]

    def _aggregate(self, global_arrays: Mapping[str, np.ndarray], updates: list[BlockUpdate], state: State,
                   blocks: BlockPass) -> tuple[dict[str, np.ndarray], State, list[str]]:
        """(new arrays, new state, keys of the updates used) — what each strategy implements."""
        raise NotImplementedError


def block_for(n_updates: int, cap: int = BLOCK_ELEMS) -> int:
    """Elements per block when ``n_updates`` are read side by side: their float64 blocks stay within
    ``READ_BUDGET``, at most ``cap`` and at least 4096."""
    return max(4096, min(cap, READ_BUDGET // (8 * max(1, n_updates))))


class BlockPass:
    """Reads the updates block by block for a strategy, checking unchecked values on the way."""

    def __init__(self, global_arrays: Mapping[str, np.ndarray], updates: list[BlockUpdate], block_elems: int,
                 max_norm: float | None, measure_all: bool = False, readers: int = 0):
        self.global_flat = {k: np.asarray(v).reshape(-1) for k, v in global_arrays.items()}
        self.updates, self.block_elems, self.max_norm, self.readers = updates, block_elems, max_norm, readers
        self._sums: dict[str, dict[str, float]] = {u.key: {} for u in updates
                                                   if measure_all or not u.values_checked}
        self._complete = False

    def __call__(self, updates: Iterable[BlockUpdate] | None = None) -> Iterator[tuple[str, int, int, np.ndarray,
                                                                                  list[np.ndarray]]]:
        """(tensor, start, stop, global block, [each update's block]) over the model; ``updates``
        defaults to all (Krum's second pass reads only the chosen)."""
        chosen = self.updates if updates is None else list(updates)
        checking = [] if updates is not None or self._complete else \
            [(i, u.key) for i, u in enumerate(chosen) if u.key in self._sums]
        for name, start, stop, blocks in self._read(chosen):
            g = compilable(self.global_flat[name][start:stop])
            for i, key in checking:
                if blocks[i].shape != g.shape:
                    raise ValueError(f"update {key!r}: tensor {name!r} block {start}:{stop} has "
                                     f"{blocks[i].size} elements, expected {stop - start}")
                sums = self._sums[key]
                sums[name] = sums.get(name, 0.0) + sumsq(blocks[i], g)
            yield name, start, stop, g, blocks
            del blocks  # before the next block's reads
        if updates is None:
            self._complete = True

    def _read(self, chosen: list[BlockUpdate]) -> Iterator[tuple[str, int, int, list[np.ndarray]]]:
        """Each block of every chosen update. With ``readers`` threads, block k + 1 of all updates is
        read concurrently while block k is processed (the kernels release the GIL): reads overlap
        compute, and at most two blocks per update are in memory."""
        ranges = list(block_ranges(self.global_flat, self.block_elems))
        if not self.readers:
            for name, start, stop in ranges:
                yield name, start, stop, [compilable(u.read(name, start, stop)) for u in chosen]
            return
        with ThreadPoolExecutor(self.readers, thread_name_prefix="update-read") as pool:
            def fetch(i):
                return None if i >= len(ranges) else [pool.submit(u.read, *ranges[i]) for u in chosen]

            pending = fetch(0)
            for i, (name, start, stop) in enumerate(ranges):
                current, pending = pending, fetch(i + 1)
                yield name, start, stop, [compilable(f.result()) for f in current]

    def sq_distances(self) -> dict[str, float]:
        """‖update − global‖² of each measured update (after a full pass)."""
        return {key: float(sum(sums.values())) for key, sums in self._sums.items()}

    def failures(self) -> dict[str, UpdateRejected]:
        """The value rules on what the pass saw: {key: the rule it broke}."""
        if self._sums and not self._complete:
            raise RuntimeError("a strategy returned before reading every update once")
        failed = {}
        for key, sums in self._sums.items():
            try:
                check_value_sums(sums, self.max_norm, relative=True)
            except UpdateRejected as e:
                failed[key] = e
        return failed


def stacked(parts: list[np.ndarray]) -> Iterator[tuple[int, int, np.ndarray]]:
    """(begin, end, updates × columns array) over a block's parts, a few MB of columns at a time,
    so rules that look across updates at each coordinate (sort, distances) work in cache."""
    n, size = len(parts), parts[0].size
    chunk = max(1024, STACK_BYTES // (8 * n))
    buf = np.empty(n * min(chunk, size), dtype=parts[0].dtype)
    for begin in range(0, size, chunk):
        end = min(begin + chunk, size)
        rows = buf[: n * (end - begin)].reshape(n, end - begin)
        for r, part in enumerate(parts):
            rows[r] = part[begin:end]
        yield begin, end, rows


def store(out: np.ndarray, start: int, stop: int, values: np.ndarray) -> None:
    """Write float64 ``values`` into the model-dtype ``out`` (flat): integer buffers (step counters)
    are rounded, not truncated."""
    flat = out.reshape(-1)
    if np.issubdtype(flat.dtype, np.integer) or flat.dtype == np.bool_:
        values = np.rint(values)
    flat[start:stop] = values
