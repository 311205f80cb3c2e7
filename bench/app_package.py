"""The Function App's start-up cost and deployment size (not a test): import time of ``function_app`` in
a fresh process, which heavy libraries that import pulls in and through which module, and what a
``func azure functionapp publish`` would upload (``.funcignore`` applied) and then install (the
remote build of ``requirements.txt``, sized from this venv's installed files).

    .venv/bin/python bench/app_package.py [--app-dir DIR] [--repeats 5]

``--app-dir`` measures another checkout (e.g. a worktree of main for "before" figures) with this
venv. Without a ``.funcignore`` the upload is the whole folder (symlinked ``.venv``/``node_modules``
followed, ``.git`` left out), zipped only if it is under 500 MB.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedfunc.azure.package import (FUNCIGNORE, installed_closure, package_bytes, package_files,  # noqa: E402
                                   requirements)

HEAVY = ("torch", "matplotlib", "sklearn", "scipy", "azure.ai.ml", "pandas")
FIRST_PARTY = ("fedfunc", "activities", "orchestrations", "triggers", "function_app")
ZIP_LIMIT = 500e6


def _env(app_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEDFUNC_", "AzureWebJobs"))}
    return {**env, "PYTHONPATH": str(app_dir), "FEDFUNC_STORAGE": "UseDevelopmentStorage=true"}


def import_seconds(app_dir: Path, repeats: int) -> list[float]:
    code = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"
    out = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", code], cwd=app_dir, env=_env(app_dir),
                              capture_output=True, text=True, check=True)
        out.append(float(proc.stdout.strip().splitlines()[-1]))
    return out


def heavy_imports(app_dir: Path) -> dict[str, tuple[float, str]]:
    """For each heavy package the app imports: cumulative seconds, and the chain of first-party modules
    that imported it (innermost first)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import function_app"], cwd=app_dir,
                          env=_env(app_dir), capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if m:
            rows.append((int(m[1]) / 1e6, len(m[2]), m[3]))
    found = {}
    for i, (cumulative, depth, name) in enumerate(rows):
        if name not in HEAVY or name in found:
            continue
        chain, level = [], depth
        for _, d, parent in rows[i + 1:]:  # -X importtime prints a module after everything it imported
            if d < level:
                level = d
                if parent.startswith(FIRST_PARTY):
                    chain.append(parent)
        found[name] = (cumulative, " <- ".join(chain) or "?")
    return found


def upload(app_dir: Path) -> tuple[int, int, int | None]:
    """Files, bytes and deflated zip bytes (None above ZIP_LIMIT) of what the publish would upload."""
    files = package_files(app_dir)
    size = package_bytes(app_dir, files)
    if size > ZIP_LIMIT:
        return len(files), size, None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(app_dir / f, f.as_posix())
    return len(files), size, buf.tell()


def remote_build(app_dir: Path) -> dict[str, int]:
    """Installed bytes of every distribution ``requirements.txt`` pulls in (resolved in this venv)."""
    return {name: sum(f.size or 0 for f in dist.files or [])
            for name, dist in installed_closure(app_dir / "requirements.txt").items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    app_dir = args.app_dir.resolve()
    print(f"app: {app_dir} ({'with' if (app_dir / FUNCIGNORE).exists() else 'without'} {FUNCIGNORE})")

    times = import_seconds(app_dir, args.repeats)
    print(f"import function_app, fresh process: median {statistics.median(times):.2f} s, "
          f"min {min(times):.2f} s over {len(times)} runs")
    for name, (seconds, importer) in sorted(heavy_imports(app_dir).items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:<12} {seconds:5.2f} s cumulative, imported by {importer}")

    count, size, zipped = upload(app_dir)
    print(f"publish upload: {count} files, {size / 1e6:.1f} MB"
          + (f", zip {zipped / 1e6:.2f} MB" if zipped is not None else ", not zipped (over 500 MB)"))
    top = {}
    for f in package_files(app_dir):
        top[f.parts[0] if len(f.parts) > 1 else "."] = top.get(f.parts[0] if len(f.parts) > 1 else ".", 0) + \
            (app_dir / f).stat().st_size
    print("  largest parts: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in
                                           sorted(top.items(), key=lambda kv: -kv[1])[:5]))

    sizes, options = remote_build(app_dir), requirements(app_dir / "requirements.txt")[1]
    torch = metadata.version("torch")
    print(f"remote build of requirements.txt: {len(sizes)} distributions, {sum(sizes.values()) / 1e6:.0f} MB "
          f"installed (this venv's files); torch {torch}: {sizes.get('torch', 0) / 1e6:.0f} MB")
    print(f"  pip options in requirements.txt: {options or 'none'}; torch pin: "
          + next((ln.strip() for ln in (app_dir / 'requirements.txt').read_text().splitlines()
                  if ln.strip().startswith("torch")), "none"))
    nvidia = [n for n in sizes if n.startswith("nvidia-")]
    print(f"  CUDA packages in the closure: {nvidia or 'none'}")


if __name__ == "__main__":
    main()
