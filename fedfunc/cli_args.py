"""Command-line values shared by commands: ``KEY=VALUE`` pairs whose values read as JSON where they can,
and JSON object files."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import typer


def key_values(items: Iterable[str], option: str, example: str, sep: str | None = None) -> dict:
    """``KEY=VALUE`` items (``sep``: also split each item on it) as a dict; a VALUE that reads as JSON
    (0.01, true, 3, "x") is that value, else the string. ``typer.BadParameter`` naming ``option`` otherwise."""
    values: dict = {}
    for item in items:
        for pair in filter(None, item.split(sep) if sep else [item]):
            key, eq, raw = pair.partition("=")
            if not eq or not key:
                raise typer.BadParameter(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw
    return values


def json_object(path: Path, option: str, what: str) -> dict:
    """The JSON object in ``path``; ``typer.BadParameter`` naming ``option`` if it is not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise typer.BadParameter(f"{option} {path}: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{option} {path}: expected a JSON object of {what}")
    return value
