"""Tasks: what is trained (model builder, fixed dataset split, train / evaluate), and partitioning.

``get_task(name)`` is the entry point; ``dataset_to_bytes`` / ``dataset_from_bytes`` are how
(x, y) arrays travel to and from storage.
"""
from fedfunc.tasks.base import Dataset, Task
from fedfunc.tasks.registry import TASKS, UnknownTask, get_task
from fedfunc.tasks.storage_format import xy_from_bytes, xy_to_bytes

__all__ = ["Dataset", "TASKS", "Task", "UnknownTask", "get_task", "xy_from_bytes", "xy_to_bytes"]
