"""Tasks by name, as a run spec names them."""
from __future__ import annotations

from fedfunc.tasks.base import Task
from fedfunc.tasks.breast_cancer import BreastCancer
from fedfunc.tasks.digits import Digits
from fedfunc.validation import UnknownName

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Digits, BreastCancer)}


class UnknownTask(UnknownName):
    def __init__(self, name: str):
        super().__init__(name, f"unknown task {name!r}; known tasks: {sorted(TASKS)}")


def get_task(name: str) -> Task:
    cls = TASKS.get(name)
    if cls is None:
        raise UnknownTask(name)
    return cls()
