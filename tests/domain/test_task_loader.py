"""Loading a task from its files (as a silo does from a verified bundle), task folders, and the scientist's
commands: ``fedfunc task new`` and ``fedfunc task try``."""
from __future__ import annotations

import sys

import pytest

from fedfunc.tasks.folder import TaskFolderError, read_task_folder
from fedfunc.tasks.loader import TaskError, hyperparams_for, task_class
from fedfunc.tasks.scaffold import new_task

TASK = b'''
from torch import nn
from fedfunc.tasks.api import Hyperparams, Task, array_dataset
from .layers import width

class P(Hyperparams):
    hidden: int = 8

class Tiny(Task):
    Hyperparams = P
    num_classes = 3

    def build_model(self):
        return nn.Linear(width(), 3)

    def read_data(self, reader):
        return array_dataset([[0.0] * width()], [0])
'''


def files(**over) -> dict[str, bytes]:
    return {"task.py": TASK, "layers.py": b"def width():\n    return 4\n", **over}


def error(fn, *args) -> TaskError:
    with pytest.raises(TaskError) as e:
        fn(*args)
    return e.value


def test_a_task_imports_from_bytes_with_relative_imports_in_its_own_package():
    cls = task_class(files(), "task:Tiny")
    assert cls.__name__ == "Tiny" and cls.__module__.startswith("fedfunc_task_")
    assert cls(hyperparams_for(cls, {})).build_model().in_features == 4
    other = task_class(files(**{"layers.py": b"def width():\n    return 5\n"}), "task:Tiny")
    assert other is not cls and other.__module__ != cls.__module__  # two versions never share modules
    assert not any(m == "layers" for m in sys.modules)  # nothing leaks into the top-level namespace


def test_import_failures_name_the_file_and_line():
    e = error(task_class, files(**{"layers.py": b"x = 1\nraise ValueError('bad layer')\n"}), "task:Tiny")
    assert e.rule == "task.import" and "ValueError: bad layer" in e.message and "layers.py:2" in e.message
    absolute = files(**{"task.py": TASK.replace(b"from .layers", b"from layers")})
    e = error(task_class, absolute, "task:Tiny")
    assert e.rule == "task.import" and "relatively" in e.message


@pytest.mark.parametrize("code, says", [
    (TASK.replace(b"    def read_data", b"    def read_dataset"), "lacks required method(s) ['read_data']"),
    (TASK.replace(b"num_classes = 3", b"num_classes = 1"), "num_classes must be an int in 2..256"),
    (TASK.replace(b"    Hyperparams = P", b"    Hyperparams = dict"), "must subclass"),
    (TASK.replace(b"class Tiny(Task)", b"class Tiny"), "defines no Task subclass 'Tiny'"),
])
def test_interface_problems_are_named(code, says):
    e = error(task_class, files(**{"task.py": code}), "task:Tiny")
    assert e.rule == "task.interface" and says in e.message


def test_hyperparams_use_the_task_schema_and_the_platform_bounds():
    cls = task_class(files(), "task:Tiny")
    hp = hyperparams_for(cls, {"hidden": 16, "epochs": 3})
    assert hp.hidden == 16 and hp.epochs == 3 and hp.lr == 0.05
    assert "unknown hyper-parameter(s) ['hiden']" in error(hyperparams_for, cls, {"hiden": 2}).message
    assert "epochs" in error(hyperparams_for, cls, {"epochs": 0}).message


def test_a_task_folder_ships_its_code_but_not_samples_caches_or_hidden_files(tmp_path):
    new_task(tmp_path / "t", "my-task")
    (tmp_path / "t" / "__pycache__").mkdir()
    (tmp_path / "t" / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "t" / ".secret").write_text("token")
    toml, shipped = read_task_folder(tmp_path / "t")
    assert toml.name == "my-task" and toml.entry == "task:MyTask"
    assert sorted(shipped) == ["README.md", "task.py", "task.toml"]
    (tmp_path / "t" / "link.py").symlink_to(tmp_path / "t" / "task.py")
    with pytest.raises(TaskFolderError, match="symbolic link"):
        read_task_folder(tmp_path / "t")


def test_task_toml_problems_are_named(tmp_path):
    (tmp_path / "task.toml").write_text('name = "Bad Name"\nentry = "task:X"\n')
    with pytest.raises(TaskFolderError, match="name"):
        read_task_folder(tmp_path)
    (tmp_path / "task.toml").write_text('name = "ok"\nentry = "task:X"\nrequirements = ["numpy >>> 1"]\n')
    with pytest.raises(TaskFolderError, match="PEP 508"):
        read_task_folder(tmp_path)
    (tmp_path / "task.toml").write_text('name = "ok"\nentry = "model:X"\n')
    with pytest.raises(TaskFolderError, match="model.py"):
        read_task_folder(tmp_path)


def test_task_new_then_try_runs_a_federation_in_process(tmp_path, fedfunc):
    r = fedfunc("task", "new", "scratch", "--dir", tmp_path / "scratch")
    assert r.exit_code == 0, r.output
    assert fedfunc("task", "new", "scratch", "--dir", tmp_path / "scratch").exit_code != 0  # never overwrites
    r = fedfunc("task", "try", tmp_path / "scratch", "--rounds", "2")
    assert r.exit_code == 0, r.output
    assert "3 silos" in r.output and "centralized" in r.output
    final = [line for line in r.output.splitlines() if line.strip().startswith("│ 2")][0]
    assert float(final.split("│")[2]) >= 0.8, r.output
    broken = tmp_path / "scratch" / "task.py"
    broken.write_text(broken.read_text().replace('LABEL = "label"', 'LABEL = "diagnosis"'))
    r = fedfunc("task", "try", tmp_path / "scratch")
    assert r.exit_code == 1 and "column 'diagnosis'" in r.output and "data.csv" in r.output
