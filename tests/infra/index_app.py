"""Index a Function App as the Functions host does, in this process's environment; print what it found.

``python index_app.py APP_DIR`` (cwd and import path: APP_DIR, as on Azure where the app runs from
/home/site/wwwroot) prints JSON: the settings error if ``load_settings`` refuses the environment, and each
function's trigger with ``%SETTING%`` references resolved (unresolvable ones listed: the Functions host
would not index that function) and timer schedules checked. Run in a subprocess so the environment and
the imported app are those of one deployment only.
"""
import io
import json
import logging
import os
import sys
from pathlib import Path

app_dir = Path(sys.argv[1]).resolve()
os.chdir(app_dir)
sys.path.insert(0, str(app_dir))
captured = io.StringIO()
logging.basicConfig(stream=captured, level=logging.WARNING)

import fedfunc  # noqa: E402
from fedfunc.host.app_loader import AppLoadError, load_app, resolve_settings  # noqa: E402
from fedfunc.host.timers import Schedule  # noqa: E402
from fedfunc.settings import SettingsError, load_settings  # noqa: E402

out = {"fedfunc": str(Path(fedfunc.__file__).parent), "settings_error": None, "unresolved": {}}
try:
    load_settings(os.environ)
except SettingsError as e:
    out["settings_error"] = str(e)
try:
    app = load_app(app_dir)
except AppLoadError as e:
    out["load_error"] = str(e)
    print(json.dumps(out))
    sys.exit(0)
functions = {}
for f in app.functions.values():
    trigger = dict(f.trigger)
    try:
        for key, value in trigger.items():
            if isinstance(value, str) and "%" in value:
                trigger[key] = resolve_settings(value, f"{f.name}.{key}")
        if f.trigger_type == "timerTrigger":
            Schedule(trigger["schedule"], f"{f.name}.schedule")
    except AppLoadError as e:
        out["unresolved"][f.name] = str(e)
    functions[f.name] = {"type": f.trigger_type, "trigger": trigger, "disabled": f.disabled}
out |= {"functions": functions, "log": captured.getvalue()}
print(json.dumps(out, default=str))
