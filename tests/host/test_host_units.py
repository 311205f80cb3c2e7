"""Small pieces checked in-process: settings, schedules, the state file marker."""
from __future__ import annotations

import json
import os
import sqlite3

import pytest

from fedfunc.host.app_loader import AppLoadError, load_settings, resolve_settings
from fedfunc.host.store import StateError, Store
from fedfunc.host.timers import Schedule


def test_local_settings_values_go_to_the_environment_without_overriding(tmp_path, monkeypatch):
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"HOSTTEST_A": "from-file", "HOSTTEST_B": 3}}))
    monkeypatch.setenv("HOSTTEST_A", "from-env")
    monkeypatch.delenv("HOSTTEST_B", raising=False)
    load_settings(tmp_path)
    assert os.environ["HOSTTEST_A"] == "from-env" and os.environ["HOSTTEST_B"] == "3"
    monkeypatch.delenv("HOSTTEST_B")
    (tmp_path / "local.settings.json").write_text("[1, 2]")
    with pytest.raises(AppLoadError, match="local.settings.json"):
        load_settings(tmp_path)


def test_setting_references(monkeypatch):
    monkeypatch.setenv("HOSTTEST_CRON", "*/5 * * * * *")
    assert resolve_settings("%HOSTTEST_CRON%", "x") == "*/5 * * * * *"
    with pytest.raises(AppLoadError, match="timer trigger 't' refers to app setting %HOSTTEST_NOPE%"):
        resolve_settings("%HOSTTEST_NOPE%", "timer trigger 't'")


def test_schedules():
    from datetime import datetime, timezone
    start = datetime(2026, 1, 1, 0, 0, 7, tzinfo=timezone.utc)
    assert Schedule("*/10 * * * * *", "t").next_after(start) == datetime(2026, 1, 1, 0, 0, 10, tzinfo=timezone.utc)
    assert Schedule("0 30 9 * * *", "t").next_after(start).hour == 9
    assert (Schedule("00:00:05", "t").next_after(start) - start).total_seconds() == 5
    with pytest.raises(AppLoadError, match="six-field"):
        Schedule("*/5 * * * *", "timer trigger 't'")


def test_state_file_marker_and_version(tmp_path):
    path = tmp_path / "state.sqlite"
    Store(path).close()
    Store(path).close()  # reopening our own file is fine
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='999' WHERE key='version'")
    with pytest.raises(StateError, match="schema version '999'"):
        Store(path)
