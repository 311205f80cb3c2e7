"""The activities of silo onboarding (see ``orchestrations/onboarding.py``)."""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc.coordinator import onboarding
from fedfunc.coordinator.services import services

bp = df.Blueprint()


def _request(job: dict) -> onboarding.SiloRequest:
    return onboarding.parse_request({k: v for k, v in job.items() if k != "smoke_id"})


@bp.activity_trigger(input_name="job")
def validate_silo(job: dict) -> dict:
    return onboarding.validate(services(), _request(job)).model_dump(mode="json")


@bp.activity_trigger(input_name="job")
def provision_silo(job: dict) -> dict:
    return onboarding.provision(services(), _request(job))


@bp.activity_trigger(input_name="job")
def grant_silo_access(job: dict) -> dict:
    return onboarding.grant(services(), _request(job))


@bp.activity_trigger(input_name="job")
def smoke_test_silo(job: dict) -> dict:
    return onboarding.smoke(services(), _request(job), job["smoke_id"])


@bp.activity_trigger(input_name="job")
def mark_silo_ready(job: dict) -> dict:
    return onboarding.mark_ready(services(), _request(job))


@bp.activity_trigger(input_name="job")
def abandon_onboarding(job: dict) -> None:
    onboarding.abandon(services(), _request(job))
