"""Write each silo's data for the image example: scikit-learn's 8×8 handwritten digits as PNG files, one
folder per silo with its own train/ and test/ parts, one sub-folder per class.

    python examples/images/make_data.py OUT [--silos 3]

writes OUT/site-1/train/7/0042.png, OUT/site-1/test/3/0017.png, ... — what each silo owner then uploads
with `fedfunc silo upload site-1 --task images --train OUT/site-1/train --test OUT/site-1/test`.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--silos", type=int, default=3)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    d = load_digits()
    pixels = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # intensities 0..16 → 0..255
    rng = np.random.default_rng(args.seed)
    for i, idx in enumerate(np.array_split(rng.permutation(len(d.target)), args.silos), start=1):
        n_test = round(args.test_fraction * len(idx))
        for part, rows in (("test", idx[:n_test]), ("train", idx[n_test:])):
            for r in rows:
                path = args.out / f"site-{i}" / part / str(d.target[r]) / f"{r:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels[r], mode="L").save(path)
        print(f"site-{i}: {len(idx) - n_test} train / {n_test} test images → {args.out / f'site-{i}'}")


if __name__ == "__main__":
    main()
