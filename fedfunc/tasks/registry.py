"""Tasks by name, as a run spec names them."""
from __future__ import annotations

from fedfunc.tasks.base import Task
from fedfunc.tasks.breast_cancer import BreastCancer
from fedfunc.tasks.digits import Digits

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Digits, BreastCancer)}


class UnknownTask(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.message = f"unknown task {name!r}; known tasks: {sorted(TASKS)}"

    def __str__(self) -> str:
        return self.message


def get_task(name: str) -> Task:
    cls = TASKS.get(name)
    if cls is None:
        raise UnknownTask(name)
    return cls()
