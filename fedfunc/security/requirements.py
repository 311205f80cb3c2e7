"""A task's declared Python requirements (PEP 508) against what the silo's environment has installed.

Nothing is installed at job time: a silo runs in the environment its owner pinned (on AML, the silo's
registered environment — extend that image to add a package). A requirement the environment does not
satisfy refuses the job before any data is read, naming the requirement and what is installed.
"""
from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from fedfunc.security import Refused


def unmet(requirement: str) -> str | None:
    """Why the environment does not satisfy ``requirement`` (None if it does or its marker excludes us)."""
    try:
        req = Requirement(requirement)
    except InvalidRequirement as e:
        return f"not a PEP 508 requirement ({e})"
    if req.marker is not None and not req.marker.evaluate():
        return None
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return f"{req.name} is not installed in this silo's environment"
    try:
        version = Version(installed)
    except InvalidVersion:
        return f"{req.name} has an unreadable installed version {installed!r}"
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"{req.name} {installed} is installed, the task needs {req.specifier}"
    return None


def check_requirements(requirements: Iterable[str]) -> None:
    """Refuse (rule ``bundle.requirements``) the first requirement this environment does not satisfy."""
    for requirement in requirements:
        why = unmet(requirement)
        if why:
            raise Refused("bundle.requirements", requirement,
                          f"{why}; no package is installed at job time (extend the silo's pinned environment)")
