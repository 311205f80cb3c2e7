"""The fedfunc Function App: federated learning rounds as Durable Functions orchestrations.

The same file runs on Azure Functions and under ``fedfunc host``. Settings are validated at import,
so a bad deployment fails at start naming the setting, not at the first round.
"""
import os
import threading

import azure.durable_functions as df
import azure.functions as func

from activities import onboarding as onboarding_activities
from activities import runs as run_activities
from fedfunc import kernels
from fedfunc.settings import load_settings
from orchestrations import onboarding, retraining, training
from orchestrations import round as round_orchestration
from triggers import retraining as retraining_triggers
from triggers import runs_api, silo_events, silos_api

load_settings(os.environ)
# Aggregation's compiled kernels load while the app waits for its first round, not during it.
threading.Thread(target=kernels.warm, name="warm-kernels", daemon=True).start()

# Routes check roles themselves (API keys locally, App Service Authentication on Azure).
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (training.bp, round_orchestration.bp, onboarding.bp, retraining.bp, run_activities.bp,
                  onboarding_activities.bp, runs_api.bp, silos_api.bp, silo_events.bp, retraining_triggers.bp):
    app.register_functions(blueprint)
