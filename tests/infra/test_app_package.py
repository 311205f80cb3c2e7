"""The deployment package and what its remote build installs: the app, nothing for development, no CUDA.

``func azure functionapp publish`` zips the folder less ``.funcignore``; the platform's remote build
then installs ``requirements.txt``. Both are checked here against this checkout and this venv.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from fedfunc.azure.package import installed_closure, package_files, requirements

REPO = Path(__file__).resolve().parents[2]
FILES = [p.as_posix() for p in package_files(REPO)]
DEV_ONLY = {"pytest", "tree-sitter", "tree-sitter-bicep", "pathspec", "croniter", "typer", "rich", "inotify-simple"}
# The local implementations behind the backend interfaces (local silo processes, Azurite accounts, the local
# Durable host's Event Grid stand-in): coordinator/services.py picks them only for FEDFUNC_JOB_BACKEND=local,
# so they are never imported on Azure and their dependencies are development ones.
LOCAL_ONLY = ("fedfunc.host", "fedfunc.backends.local", "fedfunc.backends.local_provisioner", "fedfunc.silo.local",
              "fedfunc.azurite")


def test_package_is_the_app_and_what_it_reads():
    assert {"function_app.py", "host.json", "requirements.txt", "infra/roles.json"} <= set(FILES)
    for package in ("fedfunc", "activities", "orchestrations", "triggers"):
        sources = {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")}
        assert sources <= set(FILES), sources - set(FILES)


@pytest.mark.parametrize("folder", [".venv", "node_modules", ".git", "tests", "bench", "docs", ".ci"])
def test_package_leaves_out_development_folders(folder):
    assert (REPO / folder).exists()  # present here (a symlink for .venv/node_modules in worktrees): not shipped
    assert not [f for f in FILES if f == folder or f.startswith(f"{folder}/")]


def test_package_has_no_bytecode_and_no_other_infra():
    assert not [f for f in FILES if "__pycache__" in f or f.endswith(".pyc")]
    assert [f for f in FILES if f.startswith("infra/")] == ["infra/roles.json"]


def test_remote_build_gets_cpu_torch_only():
    """The pin carries the CPU build's local version, which only PyTorch's CPU index serves: no resolver
    can substitute PyPI's Linux wheel and the CUDA stack it depends on."""
    reqs, options = requirements(REPO / "requirements.txt")
    torch = [r for r in reqs if r.name == "torch"]
    assert [str(r.specifier) for r in torch] == ["==2.13.0+cpu"]
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    closure = installed_closure(REPO / "requirements.txt")
    assert not [n for n in closure if n.startswith(("nvidia-", "triton"))]
    assert metadata.version("torch") == "2.13.0+cpu"  # what the tests ran with


def test_requirements_are_the_apps_only_and_pinned():
    reqs = requirements(REPO / "requirements.txt")[0]
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs)
    assert not {r.name for r in reqs} & DEV_ONLY


def _third_party_imports() -> dict[str, str]:
    """Top-level third-party modules imported anywhere in the app's own modules (from function_app.py,
    following first-party imports, function-level ones included) → the module importing it."""
    first_party = {"fedfunc", "activities", "orchestrations", "triggers", "function_app"}
    seen, found, todo = set(), {}, ["function_app"]
    while todo:
        module = todo.pop()
        path = REPO / (module.replace(".", "/") + ".py")
        path = path if path.exists() else REPO / module.replace(".", "/") / "__init__.py"
        if module in seen or not path.exists():
            continue
        seen.add(module)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in first_party:
                    if not name.startswith(LOCAL_ONLY):
                        todo.append(name)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(name if top == "azure" else top, module)
    return found


def test_requirements_cover_everything_the_app_imports():
    closure = installed_closure(REPO / "requirements.txt")
    provided = metadata.packages_distributions()
    for name, importer in _third_party_imports().items():
        top = name.split(".")[0]
        dists = {d.lower() for d in provided.get(top, [])}
        if top == "azure":  # a namespace shared by many distributions: find the one holding the module
            parts = name.split(".")
            dists = {d.lower() for d in provided["azure"]
                     if any(str(f).startswith("/".join(parts[:2]) + "/") for f in metadata.distribution(d).files)}
        assert dists & set(closure), f"{name} (imported by {importer}) is not installed by requirements.txt"


def test_the_app_loads_no_local_implementation_at_start():
    """What makes leaving LOCAL_ONLY out of the import check honest: starting the app does not import it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDFUNC_")}
    code = ("import sys, function_app; "
            f"print([m for m in sys.modules if m.startswith({LOCAL_ONLY!r})])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(REPO), "FEDFUNC_STORAGE": "UseDevelopmentStorage=true"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_shared_pins_agree_across_requirement_files():
    pins: dict[str, set[str]] = {}
    for path in REPO.glob("requirements*.txt"):
        for r in requirements(path)[0]:
            pins.setdefault(r.name.lower(), set()).add(str(r.specifier))
    assert {n: p for n, p in pins.items() if len(p) > 1} == {}
