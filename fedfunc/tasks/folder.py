"""A task folder on the scientist's disk: ``task.toml`` and the files that ship in its bundle.

``task.toml``::

    name = "tabular"                    # what silo policies allow; data lives under data/{name}/
    entry = "task:Tabular"              # module:Class of the Task subclass
    requirements = ["torch>=2.3"]       # PEP 508; a silo refuses the job if its environment lacks one
    exclude = ["notes/*"]               # more files not to ship (fnmatch over relative paths)

Every regular file ships except ``sample/`` (data for ``fedfunc task try``, never shipped), hidden files,
``__pycache__`` and ``*.pyc``, and the ``exclude`` patterns. Symbolic links are refused.
"""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedfunc.contracts import TASK_NAME
from fedfunc.security.bundle import ENTRY
from fedfunc.validation import describe

TOML = "task.toml"
SAMPLE = "sample"
ALWAYS_EXCLUDED = (f"{SAMPLE}/*", "*/__pycache__/*", "__pycache__/*", "*.pyc")


class TaskFolderError(ValueError):
    """A task folder that cannot be bundled; names the file and the problem."""


class TaskToml(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TASK_NAME)
    entry: str = Field(pattern=ENTRY, description="module:Class, e.g. task:Digits")
    requirements: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("requirements")
    @classmethod
    def _pep508(cls, v: list[str]) -> list[str]:
        for line in v:
            try:
                Requirement(line)
            except InvalidRequirement as e:
                raise ValueError(f"{line!r} is not a PEP 508 requirement ({e})") from None
        return v


def read_toml(folder: Path) -> TaskToml:
    path = Path(folder) / TOML
    if not path.is_file():
        raise TaskFolderError(f"{folder}: no {TOML} (name, entry, requirements); `fedfunc task new` makes one")
    try:
        return TaskToml.model_validate(tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TaskFolderError(f"{path}: {e}") from None
    except ValidationError as e:
        raise TaskFolderError(f"{path}: {describe(e)}") from None


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def read_task_folder(folder: Path) -> tuple[TaskToml, dict[str, bytes]]:
    """The folder's ``task.toml`` and the files that ship, by relative POSIX path."""
    folder = Path(folder)
    toml = read_toml(folder)
    patterns = (*ALWAYS_EXCLUDED, *toml.exclude)
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if _hidden(rel) or any(fnmatch.fnmatchcase(rel, p) for p in patterns):
            continue
        if path.is_symlink():
            raise TaskFolderError(f"{path}: a symbolic link; a bundle holds regular files only")
        if path.is_file():
            files[rel] = path.read_bytes()
    module = toml.entry.partition(":")[0].replace(".", "/")
    if f"{module}.py" not in files and f"{module}/__init__.py" not in files:
        raise TaskFolderError(f"{folder / TOML}: entry {toml.entry!r} names module {module}.py, which the folder "
                              "does not ship")
    return toml, files
