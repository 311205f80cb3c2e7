"""The activities of silo onboarding (see ``orchestrations/onboarding.py``)."""
from __future__ import annotations

import azure.durable_functions as df

from fedfunc import protocol as p
from fedfunc.coordinator import onboarding
from fedfunc.coordinator.services import services

bp = df.Blueprint()
PROVISION, GRANT, SMOKE, READY = p.ONBOARDING_STEPS


def _request(job: dict) -> onboarding.SiloRequest:
    return onboarding.parse_request({k: v for k, v in job.items() if k != "smoke_id"})


@bp.function_name(p.VALIDATE_SILO)
@bp.activity_trigger(input_name="job")
def validate_silo(job: dict) -> dict:
    return onboarding.validate(services(), _request(job)).model_dump(mode="json")


@bp.function_name(PROVISION)
@bp.activity_trigger(input_name="job")
def provision_silo(job: dict) -> dict:
    return onboarding.provision(services(), _request(job))


@bp.function_name(GRANT)
@bp.activity_trigger(input_name="job")
def grant_silo_access(job: dict) -> dict:
    return onboarding.grant(services(), _request(job))


@bp.function_name(SMOKE)
@bp.activity_trigger(input_name="job")
def smoke_test_silo(job: dict) -> dict:
    return onboarding.smoke(services(), _request(job), job["smoke_id"])


@bp.function_name(READY)
@bp.activity_trigger(input_name="job")
def mark_silo_ready(job: dict) -> dict:
    return onboarding.mark_ready(services(), _request(job))


@bp.function_name(p.ABANDON_ONBOARDING)
@bp.activity_trigger(input_name="job")
def abandon_onboarding(job: dict) -> None:
    onboarding.abandon(services(), _request(job))
