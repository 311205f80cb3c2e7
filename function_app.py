"""The fedfunc Function App: federated learning rounds as Durable Functions orchestrations.

The same file runs on Azure Functions and under ``fedfunc host``. Settings are validated at start; a
missing or invalid one is logged with its name and the app still indexes every function, so HTTP calls
answer 503 naming the setting (``triggers.auth``) and Event Grid keeps retrying its deliveries until an
admin fixes it, instead of an app with no functions at all.
"""
import logging
import os
import threading

import azure.durable_functions as df
import azure.functions as func

from activities import observe as observe_activities
from activities import onboarding as onboarding_activities
from activities import runs as run_activities
from fedfunc import kernels
from fedfunc.settings import SettingsError, load_settings
from orchestrations import onboarding, retraining, training
from orchestrations import round as round_orchestration
from triggers import observe as observe_triggers
from triggers import retraining as retraining_triggers
from triggers import run_page, runs_api, silo_events, silos_api

try:
    load_settings(os.environ)
except SettingsError as e:
    logging.getLogger("fedfunc").error("invalid app setting; HTTP calls answer 503 until it is fixed: %s", e)
# Aggregation's compiled kernels load while the app waits for its first round, not during it.
threading.Thread(target=kernels.warm, name="warm-kernels", daemon=True).start()

# Routes check roles themselves (API keys locally, App Service Authentication on Azure).
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (training.bp, round_orchestration.bp, onboarding.bp, retraining.bp, run_activities.bp,
                  onboarding_activities.bp, observe_activities.bp, runs_api.bp, run_page.bp, silos_api.bp,
                  silo_events.bp, retraining_triggers.bp, observe_triggers.bp):
    app.register_functions(blueprint)
