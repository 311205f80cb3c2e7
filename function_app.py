"""The fedfunc Function App: federated learning rounds as Durable Functions orchestrations.

The same file runs on Azure Functions and under ``fedfunc host``. Settings are validated at import,
so a bad deployment fails at start naming the setting, not at the first round.
"""
import os

import azure.durable_functions as df
import azure.functions as func

from activities import observe as observe_activities
from activities import onboarding as onboarding_activities
from activities import runs as run_activities
from fedfunc.settings import load_settings
from orchestrations import onboarding, retraining, training
from orchestrations import round as round_orchestration
from triggers import observe as observe_triggers
from triggers import retraining as retraining_triggers
from triggers import run_page, runs_api, silo_events, silos_api

load_settings(os.environ)

# Routes check roles themselves (API keys locally, App Service Authentication on Azure).
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (training.bp, round_orchestration.bp, onboarding.bp, retraining.bp, run_activities.bp,
                  onboarding_activities.bp, observe_activities.bp, runs_api.bp, run_page.bp, silos_api.bp,
                  silo_events.bp, retraining_triggers.bp, observe_triggers.bp):
    app.register_functions(blueprint)
