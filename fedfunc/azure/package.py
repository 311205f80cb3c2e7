"""What ``func azure functionapp publish`` uploads: the app folder less what ``.funcignore`` excludes.

Core Tools zips the project folder, leaving out paths that match ``.funcignore`` (gitignore syntax); with
a remote build (the default for Python) the platform then installs ``requirements.txt``, so no
environment folder belongs in the zip. ``build`` writes exactly that folder, plus ``aml-code/`` (the job
code silo jobs run, ``FEDFUNC_AML_CODE``), so it can be published as is:
``python -m fedfunc.azure.package dist/app && cd dist/app && func azure functionapp publish <app>``.
The bench (package size) and the tests (the package indexes with main.bicep's settings) use it too.
Development-only: the app never imports this module.
"""
from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

import pathspec
from packaging.requirements import Requirement

FUNCIGNORE = ".funcignore"
JOB_CODE = "aml-code"
JOB_PACKAGE = "fedfunc"


def ignore_spec(app_dir: Path) -> pathspec.GitIgnoreSpec:
    path = Path(app_dir) / FUNCIGNORE
    lines = path.read_text().splitlines() if path.exists() else []
    return pathspec.GitIgnoreSpec.from_lines(lines)


def package_files(app_dir: Path, *, skip_git: bool = True) -> list[Path]:
    """Files (relative paths) the publish would zip. Symlinked folders are followed, as a zip of the folder
    would; ``.git`` is skipped even without a ``.funcignore`` unless ``skip_git`` is False."""
    app_dir = Path(app_dir)
    spec, found = ignore_spec(app_dir), []
    for root, dirs, files in os.walk(app_dir, followlinks=True):
        rel = Path(root).relative_to(app_dir)
        dirs[:] = sorted(d for d in dirs if not (skip_git and rel == Path(".") and d == ".git")
                         and not spec.match_file(f"{(rel / d).as_posix()}/"))
        found += [rel / f for f in sorted(files) if not spec.match_file((rel / f).as_posix())]
    return found


def package_bytes(app_dir: Path, files: list[Path]) -> int:
    return sum((Path(app_dir) / f).stat().st_size for f in files)


def requirements(path: Path) -> tuple[list[Requirement], list[str]]:
    """The requirements of a pip requirements file and its option lines (``--extra-index-url ...``)."""
    reqs, options = [], []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-"):
            options.append(line)
        elif line:
            reqs.append(Requirement(line))
    return reqs, options


def installed_closure(path: Path) -> dict[str, metadata.Distribution]:
    """Every distribution installing ``path``'s requirements pulls in, resolved in this environment (what a
    remote build installs, given the same pins): normalized name → distribution."""
    todo, found = requirements(path)[0], {}
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in found:
            continue
        found[name] = metadata.distribution(req.name)
        todo += [r for r in map(Requirement, found[name].requires or [])
                 if r.marker is None or r.marker.evaluate({"extra": ""})]
    return found


def build(app_dir: Path, out: Path) -> list[Path]:
    """Copy the package into ``out`` (emptied first) and add ``aml-code/fedfunc`` if the app has no job code
    folder; returns the package's files."""
    app_dir, out = Path(app_dir), Path(out)
    if out.exists():
        shutil.rmtree(out)
    files = package_files(app_dir)
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(app_dir / rel, out / rel)
    if not (out / JOB_CODE).exists():
        shutil.copytree(out / JOB_PACKAGE, out / JOB_CODE / JOB_PACKAGE)
    return package_files(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fedfunc.azure.package OUT_DIR")
    built = build(Path.cwd(), Path(sys.argv[1]))
    print(f"{len(built)} files, {package_bytes(Path(sys.argv[1]), built) / 1e6:.1f} MB in {sys.argv[1]}")
