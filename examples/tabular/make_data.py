"""Write each silo's data for the tabular example: scikit-learn's breast-cancer set as CSV (or Parquet)
tables, one folder per silo with its own train/ and test/ parts.

    python examples/tabular/make_data.py OUT [--silos 3] [--parquet]

writes OUT/site-1/train/data.csv, OUT/site-1/test/data.csv, ... — what each silo owner then uploads
with `fedfunc silo upload site-1 --task tabular --train OUT/site-1/train --test OUT/site-1/test`.
"""
import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--silos", type=int, default=3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--parquet", action="store_true", help="write Parquet instead of CSV")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    d = load_breast_cancer()
    header = [str(f) for f in d.feature_names]
    rng = np.random.default_rng(args.seed)
    for i, idx in enumerate(np.array_split(rng.permutation(len(d.target)), args.silos), start=1):
        n_test = round(args.test_fraction * len(idx))
        for part, rows in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = args.out / f"site-{i}" / part
            folder.mkdir(parents=True, exist_ok=True)
            columns = {h: d.data[rows, j] for j, h in enumerate(header)}
            columns["diagnosis"] = d.target_names[d.target[rows]]
            if args.parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.table({k: list(v) for k, v in columns.items()}), folder / "data.parquet")
            else:
                with open(folder / "data.csv", "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(columns)
                    w.writerows(zip(*columns.values()))
        print(f"site-{i}: {len(idx) - n_test} train / {n_test} test rows → {args.out / f'site-{i}'}")


if __name__ == "__main__":
    main()
