"""Aggregation throughput and memory at 2, 10 and 100 updates of 10M float32 parameters.

Every figure counts bytes of float32 update CONSUMED per second (one update's 40 MB read once = 40 MB),
the unit a round cares about; ``np.add(a, b, out=a)`` on 10M float32 is measured in the same run and
counted the same way (40 MB consumed per call, although it moves 120 MB).

Rows:
- kernel: ``kernels.accumulate`` alone — 10 in-memory updates, block by block into a cache-resident
  float64 accumulator (what FedAvg's pass runs per block), no reading, no checks.
- fedavg / trimmed_mean / median, "memory": the whole ``aggregate_round`` over ``RangeUpdate``s whose
  ``read`` slices in-memory blobs (zero copy): header rules when opened, the finiteness rule and the
  norm bound (‖u − g‖₂ ≤ 1e6) on every value inside the pass, the float64 key-ordered mean.
- fedavg, "files": the same over ``RangeUpdate``s reading files with ``os.pread`` (the page cache
  plays the blob store): the process holds blocks, never whole updates. 100 × 40 MB is run this way;
  "1 read-ahead" reads the next block on a second thread while the current one is combined.
- streaming: today's round path (read a file → ``validate_update`` → ``FedAvg.aggregate``, one at a time).
Memory: tracemalloc's peak of the aggregation's own allocations (numpy's and Python's, including the
bytes each ``pread`` returns), also as a multiple of one 40 MB model. The blobs of the "memory"
source exist before the call and are not counted; the file source has none in the process.

Run: flock /tmp/fedfunc-heavy.lock env PYTHONPATH=. .venv/bin/python bench/aggregation.py
     (≈3 min, ≈4.5 GB of temporary files for the 100-update row; --updates 2 10 to skip it)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from fedfunc import kernels
from fedfunc.aggregation import RangeUpdate, get_strategy
from fedfunc.aggregation.base import BLOCK_ELEMS
from fedfunc.weights import ModelManifest, encode, validate_update

# 10M parameters in three tensors of uneven sizes.
SHAPES = {"layer0.weight": (2500, 2000), "layer1.weight": (2000, 2000), "layer2.weight": (1000, 1000)}
RUN = {"run": "bench", "round": "1", "nonce": "n"}
MAX_NORM = 1e6


def update_arrays(global_arrays, noise, i):
    """Update i: the global model plus a silo-specific multiple of shared noise (cheap to make)."""
    return {k: g + noise[k] * np.float32(1 + 1e-3 * i) for k, g in global_arrays.items()}


def blob(global_arrays, noise, i) -> bytes:
    return encode(update_arrays(global_arrays, noise, i), {**RUN, "silo": f"silo{i:03d}", "num_samples": str(100 + i)})


def memory_sources(blobs: list[bytes], manifest):
    views = [memoryview(b) for b in blobs]
    return [RangeUpdate(lambda o, n, v=v: v[o:o + n], len(v), manifest, expected={**RUN, "silo": f"silo{i:03d}"})
            for i, v in enumerate(views)]


def file_sources(paths: list[Path], manifest, fds: list[int]):
    out = []
    for i, p in enumerate(paths):
        fd = os.open(p, os.O_RDONLY)
        fds.append(fd)
        out.append(RangeUpdate(lambda o, n, fd=fd: os.pread(fd, n, o), os.fstat(fd).st_size, manifest,
                               expected={**RUN, "silo": f"silo{i:03d}"}))
    return out


def measure(fn, repeats: int) -> tuple[float, int]:
    """(best seconds, tracemalloc peak bytes)."""
    fn()  # warm: compile, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return min(times), peak


def row(label: str, n: int, model_bytes: int, seconds: float, peak: int | None = None):
    gbps = n * model_bytes / seconds / 1e9
    mem = "" if peak is None else f"  peak {peak / 1e6:5.0f} MB = {peak / model_bytes:4.2f}× one model"
    print(f"{label:<52} {n:>4} × 40 MB {seconds:7.3f} s {gbps:6.2f} GB/s{mem}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, nargs="+", default=[2, 10, 100])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    global_arrays = {k: rng.standard_normal(s, dtype=np.float32) for k, s in SHAPES.items()}
    noise = {k: rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for k, s in SHAPES.items()}
    manifest = ModelManifest.from_arrays(global_arrays)
    model_bytes = manifest.nbytes
    print(f"model: {sum(a.size for a in global_arrays.values()) / 1e6:.0f}M float32 = {model_bytes / 1e6:.0f} MB "
          f"per update; GB/s = bytes of update consumed per second; best of {args.repeats}; single thread")

    a, b = np.ones(10_000_000, np.float32), np.ones(10_000_000, np.float32)
    seconds, _ = measure(lambda: np.add(a, b, out=a), 10)
    row("np.add(a, b, out=a) in place", 1, a.nbytes, seconds)
    del a, b

    ten = [update_arrays(global_arrays, noise, i) for i in range(10)]
    flat = [{k: v.reshape(-1) for k, v in u.items()} for u in ten]
    weights = [100.0 + i for i in range(10)]
    acc = np.empty(BLOCK_ELEMS)

    def kernel_only():
        for name in SHAPES:
            size = flat[0][name].size
            for start in range(0, size, BLOCK_ELEMS):
                block = acc[: min(BLOCK_ELEMS, size - start)]
                block[...] = 0.0
                kernels.accumulate(block, [u[name][start:start + BLOCK_ELEMS] for u in flat], weights)

    row("kernel alone (accumulate, in memory)", 10, model_bytes, measure(kernel_only, args.repeats)[0])
    del ten, flat

    with tempfile.TemporaryDirectory() as tmp:
        for n in args.updates:
            if n <= 10:
                blobs = [blob(global_arrays, noise, i) for i in range(n)]
                for name in ("fedavg",) + (("trimmed_mean", "median", "krum") if n == 10 else ()):
                    strategy = get_strategy(name, **({"f": 1} if name == "krum" else {}))
                    run = lambda s=strategy: s.aggregate_round(global_arrays, memory_sources(blobs, manifest),
                                                               max_norm=MAX_NORM)
                    row(f"{name}: read+validate+aggregate, memory", n, model_bytes, *measure(run, args.repeats))
                del blobs
            paths = []
            for i in range(n):
                path = Path(tmp) / f"silo{i:03d}.safetensors"
                if not path.exists():
                    path.write_bytes(blob(global_arrays, noise, i))
                paths.append(path)
            for readers in (0, 1):
                fds: list[int] = []
                try:
                    run = lambda r=readers: get_strategy("fedavg").aggregate_round(
                        global_arrays, file_sources(paths, manifest, fds), max_norm=MAX_NORM, readers=r)
                    row(f"fedavg: read+validate+aggregate, files, {readers} read-ahead", n, model_bytes,
                        *measure(run, args.repeats))
                finally:
                    for fd in fds:
                        os.close(fd)

            def streaming():
                silos = [p.stem for p in paths]
                updates = (validate_update(p.read_bytes(), manifest, expected={**RUN, "silo": p.stem, "silos": silos},
                                           global_arrays=global_arrays, max_norm=MAX_NORM) for p in paths)
                get_strategy("fedavg").aggregate(global_arrays, updates)

            row("streaming: read file, validate, FedAvg", n, model_bytes, *measure(streaming, 1 if n > 10 else args.repeats))


if __name__ == "__main__":
    main()
