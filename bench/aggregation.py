"""Aggregation throughput and memory: 10 updates × 10M float32 parameters through
read → validate_update (header, tensors, finiteness, norm vs global) → streaming FedAvg.

Prints GB/s of update bytes consumed and the memory high-water of that phase (RSS via
/proc VmHWM after a reset, and tracemalloc's peak of numpy/Python allocations), next to numpy's
own ``np.add(a, b, out=a)`` bandwidth on the same machine as a ceiling for comparison.
Run: .venv/bin/python bench/aggregation.py  (≈10 s, ≈1.2 GB high-water from the 100M np.add)
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedfunc.aggregation import get_strategy
from fedfunc.weights import ModelManifest, ValidatedUpdate, encode, validate_update

# 10M parameters in three tensors of uneven sizes.
SHAPES = {"layer0.weight": (2500, 2000), "layer1.weight": (2000, 2000), "layer2.weight": (1000, 1000)}
RUN = {"run": "bench", "round": "1", "nonce": "n"}


def write_updates(folder: Path, n: int, global_arrays: dict[str, np.ndarray]) -> list[Path]:
    """One update file per silo (global + small noise), generated one at a time."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arrays = {k: (g + rng.standard_normal(g.shape, dtype=np.float32) * 1e-3) for k, g in global_arrays.items()}
        meta = {**RUN, "silo": f"silo{i}", "num_samples": str(100 + i)}
        path = folder / f"silo{i}.safetensors"
        path.write_bytes(encode(arrays, meta))
        paths.append(path)
    return paths


@dataclass
class Tally:
    """Bytes consumed and seconds spent per stage over one aggregation."""
    consumed: int = 0
    read: float = 0.0
    validate: float = 0.0


def read_and_validate(path: Path, manifest: ModelManifest, global_arrays, silos: list[str],
                      tally: Tally) -> ValidatedUpdate:
    """What the aggregate activity does per silo (download → validate); the blob dies on return."""
    t0 = time.perf_counter()
    data = path.read_bytes()
    t1 = time.perf_counter()
    update = validate_update(data, manifest, expected={**RUN, "silo": path.stem, "silos": silos},
                             global_arrays=global_arrays, max_norm=1e6)
    tally.consumed += len(data)
    tally.read += t1 - t0
    tally.validate += time.perf_counter() - t1
    return update


def validated(paths: list[Path], manifest: ModelManifest, global_arrays, tally: Tally) -> Iterator[ValidatedUpdate]:
    silos = [p.stem for p in paths]
    return (read_and_validate(p, manifest, global_arrays, silos, tally) for p in paths)


def reset_rss_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_high_water_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def aggregate_once(paths, manifest, global_arrays, trace: bool) -> tuple[float, Tally, int]:
    """(seconds, per-stage tally, tracemalloc peak or 0)."""
    tally = Tally()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    get_strategy("fedavg").aggregate(global_arrays, validated(paths, manifest, global_arrays, tally))
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    return seconds, tally, peak


def numpy_add_bandwidth(n: int, repeats: int) -> float:
    """GB/s of np.add(a, b, out=a) on n float32, counting 2 reads + 1 write per element."""
    a, b = np.ones(n, np.float32), np.ones(n, np.float32)
    np.add(a, b, out=a)  # warm up (page faults)
    start = time.perf_counter()
    for _ in range(repeats):
        np.add(a, b, out=a)
    return 3 * a.nbytes * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    args = parser.parse_args()
    global_arrays = {k: np.random.default_rng(1).standard_normal(s, dtype=np.float32) for k, s in SHAPES.items()}
    manifest = ModelManifest.from_arrays(global_arrays)
    params = sum(a.size for a in global_arrays.values())
    print(f"model: {params / 1e6:.1f}M float32 parameters = {manifest.nbytes / 1e6:.0f} MB per update; "
          f"{args.updates} updates")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_updates(Path(tmp), args.updates, global_arrays)
        aggregate_once(paths, manifest, global_arrays, trace=False)  # warm the page cache
        rss_reset = reset_rss_high_water()
        rss_before = rss_high_water_mb()
        runs = [aggregate_once(paths, manifest, global_arrays, trace=False) for _ in range(args.repeats)]
        rss_peak = rss_high_water_mb()
        _, _, traced_peak = aggregate_once(paths, manifest, global_arrays, trace=True)
    seconds, tally, _ = min(runs, key=lambda r: r[0])
    gb = tally.consumed / 1e9
    print(f"read + validate + FedAvg: {gb:.2f} GB in {seconds:.2f} s = {gb / seconds:.2f} GB/s "
          f"(best of {args.repeats}: {', '.join(f'{r[0]:.2f}' for r in runs)} s)")
    fedavg = seconds - tally.read - tally.validate
    print(f"  by stage: read {tally.read:.2f} s ({gb / tally.read:.1f} GB/s), validate {tally.validate:.2f} s "
          f"({gb / tally.validate:.1f} GB/s), FedAvg {fedavg:.2f} s ({gb / fedavg:.1f} GB/s)")
    print(f"numpy np.add(a, b, out=a), 10M float32: {numpy_add_bandwidth(10_000_000, 20):.2f} GB/s "
          f"(2 reads + 1 write, 80 MB working set)")
    print(f"numpy np.add(a, b, out=a), 100M float32: {numpy_add_bandwidth(100_000_000, 5):.2f} GB/s "
          f"(800 MB working set)")
    print(f"tracemalloc peak during aggregation: {traced_peak / 1e6:.0f} MB "
          f"(= {traced_peak / manifest.nbytes:.1f}× one update; holding all would be {args.updates}×)")
    if rss_reset:
        print(f"RSS high-water during aggregation: {rss_peak:.0f} MB (process RSS before: {rss_before:.0f} MB, "
              f"which includes the {manifest.nbytes / 1e6:.0f} MB global model)")
    else:
        print("RSS high-water: unavailable (/proc/self/clear_refs not writable)")


if __name__ == "__main__":
    main()
