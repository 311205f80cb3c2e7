"""Load a Python v2-model Function App: settings into the environment, `function_app.py`
imported, and its functions described the way the Functions host sees them."""
from __future__ import annotations

import enum
import importlib.util
import json
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from azure.functions.decorators.function_app import FunctionRegister

log = logging.getLogger("fedfunc.host")


class AppLoadError(RuntimeError):
    """The app directory, its settings or its functions cannot be used."""


def _plain(value: Any) -> Any:
    """Binding dicts hold enums (auth level, methods); the host only needs their values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def resolve_settings(text: str, where: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as the Functions host does for trigger fields."""
    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise AppLoadError(f"{where} refers to app setting %{name}%, which is not set")
        return os.environ[name]
    return re.sub(r"%([^%]+)%", lookup, text)


def setting_is_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true")


@dataclass
class Function:
    name: str
    trigger_type: str
    trigger: dict
    fn: Callable
    client_param: str | None = None
    disabled: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def param(self) -> str:
        return self.trigger["name"]


@dataclass
class App:
    directory: Path
    functions: dict[str, Function]
    route_prefix: str

    def of_type(self, trigger_type: str) -> list[Function]:
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]

    def get(self, name: str, trigger_type: str) -> Function | None:
        f = self.functions.get(name)
        return f if f and f.trigger_type == trigger_type else None


def load_settings(directory: Path) -> None:
    """`local.settings.json` Values go into the environment; variables already set win."""
    path = directory / "local.settings.json"
    if not path.exists():
        return
    try:
        values = json.loads(path.read_text()).get("Values", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise AppLoadError(f"{path}: not a JSON object with 'Values': {exc}") from exc
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def _route_prefix(directory: Path) -> str:
    path = directory / "host.json"
    if path.exists():
        try:
            prefix = json.loads(path.read_text()).get("extensions", {}).get("http", {}).get("routePrefix")
        except json.JSONDecodeError as exc:
            raise AppLoadError(f"{path}: invalid JSON: {exc}") from exc
        if prefix is not None:
            return prefix.strip("/")
    return "api"


def _import_app(directory: Path) -> FunctionRegister:
    path = directory / "function_app.py"
    if not path.exists():
        raise AppLoadError(f"{path} not found: APP_DIR must hold a v2-model function_app.py")
    sys.path.insert(0, str(directory))
    spec = importlib.util.spec_from_file_location("function_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        log.error("importing %s failed:\n%s", path, traceback.format_exc())
        raise AppLoadError(f"{path}: importing the app failed: {type(exc).__name__}: {exc}") from exc
    apps = [v for v in vars(module).values() if isinstance(v, FunctionRegister)]
    if len(apps) != 1:
        raise AppLoadError(f"{path} must define exactly one FunctionApp/DFApp, found {len(apps)}")
    return apps[0]


def load_app(directory: Path) -> App:
    directory = Path(directory).resolve()
    load_settings(directory)
    registered = _import_app(directory)
    functions: dict[str, Function] = {}
    for f in registered.get_functions():
        trigger = {k: _plain(v) for k, v in f.get_trigger().get_dict_repr().items()}
        name = f.get_function_name()
        client = next((b.name for b in f.get_bindings() if b.type == "durableClient"), None)
        functions[name] = Function(
            name=name, trigger_type=trigger["type"], trigger=trigger, fn=f.get_user_function(),
            client_param=client, disabled=setting_is_true(f"AzureWebJobs.{name}.Disabled"))
    return App(directory=directory, functions=functions, route_prefix=_route_prefix(directory))
