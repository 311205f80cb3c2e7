"""The round protocol's vocabulary: instance ids, event and activity names, and the typed messages.

Orchestrations, activities and triggers agree on these and on nothing else. Messages hold references
(blob paths, hashes) and figures, never weights or code, because Durable keeps them in history.
Every message crosses the wire as JSON (``wire()``) and is validated again on arrival.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import Field, field_validator

from fedfunc.contracts import Message, ModelRef
from fedfunc.security.update_bound import UpdateBound
from fedfunc.spec import RunSpec

# Orchestrations.
TRAINING = "federated_training"
ROUND = "federated_round"
ONBOARDING = "onboard_silo"
RETRAINING = "retrain_debounce"

# Activities of a run.
INIT_RUN = "init_run"
PREPARE_ROUND = "prepare_round"
START_SILO_JOB = "start_silo_job"
AGGREGATE = "aggregate"
EVALUATE = "evaluate"
WRITE_REPORT = "write_report"

# Activities of onboarding, in order; ABANDON_ONBOARDING undoes a failed one.
VALIDATE_SILO = "validate_silo"
ONBOARDING_STEPS = ("provision_silo", "grant_silo_access", "smoke_test_silo", "mark_silo_ready")
ABANDON_ONBOARDING = "abandon_onboarding"


def round_instance_id(run: str, round_: int) -> str:
    """Deterministic, so an event for a finished round can never reach the next one."""
    return f"{run}:r{round_}"


def update_event(silo: str) -> str:
    return f"update:{silo}"


def failed_event(silo: str) -> str:
    return f"failed:{silo}"


class RoundJob(Message):
    """One round of one run: what ``federated_round`` and each of its activities work on."""

    run_id: str
    round: int = Field(ge=0)
    spec: RunSpec
    model: ModelRef          # the global model entering this round
    nonce: str               # fresh per round; every update must carry it
    update_bound: UpdateBound | None = None  # the run's bound on ‖update − global‖₂ (None: from the spec alone)
    deadline: datetime | None = None   # set by the round from the orchestration clock
    manifest: str | None = None        # the round manifest's path, once prepare_round wrote it

    @field_validator("deadline")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc)


class RunStart(Message):
    """``init_run``'s answer: the round-0 global model and the bound every update of the run is held to."""

    model: ModelRef
    update_bound: UpdateBound


class RoundPlan(Message):
    """What ``prepare_round`` fixed: the silos of this round and where the manifest is."""

    silos: list[str]
    manifest: str


class SiloJobOrder(Message):
    job: RoundJob
    silo: str


class SiloJobStarted(Message):
    """``start_silo_job``'s answer: the job id, or why submission failed (the silo then fails this round)."""

    silo: str
    job_id: str | None = None
    error: str | None = None
    submitted: datetime | None = None  # the activity's clock as it handed the job to the backend


class UpdateNotice(Message):
    """Payload of ``update:{silo}``: which blob landed (a hint; aggregation re-reads and re-checks it)."""

    path: str
    etag: str | None = None
    size: int | None = None
    landed: datetime | None = None     # the BlobCreated event's time (storage's clock)
    delivered: datetime | None = None  # when the event reached ``on_update`` (the trigger's clock)


class FailureNotice(Message):
    """Payload of ``failed:{silo}``: the silo's own reason and, for a refusal, the rule."""

    reason: str = "job failed"
    rule: str | None = None


class AggregateOrder(Message):
    job: RoundJob
    updates: dict[str, UpdateNotice]   # by silo


class Rejection(Message):
    silo: str
    reason: str


class JobTimes(Message):
    """When a silo job passed its own steps, as the silo recorded them in its update's metadata
    (``fedfunc.weights.TIME_KEYS``): a figure for the round's timeline, never trusted for anything else."""

    queued: datetime | None = None   # it waited for a busy worker pool from here (absent: a worker was free)
    started: datetime | None = None  # a worker began the job
    trained: datetime | None = None  # local training done; the update was then checked and uploaded


class Received(Message):
    """An accepted update as it was read: its hash, norm and the silo's metrics, for the audit trail and the report."""

    path: str
    sha256: str
    metrics: dict[str, float | int]
    norm: float | None = None   # ‖update − global‖₂
    times: JobTimes = Field(default_factory=JobTimes)


class SampleCap(Message):
    """A silo's update weighted by fewer samples than it reported, and what capped it."""

    reported: int
    used: int
    by: str


class AggregateResult(Message):
    """``aggregate``'s answer, recorded once per round (``aggregate.json``); ``model`` is None below quorum."""

    accepted: list[str] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)
    samples: dict[str, int] = Field(default_factory=dict)
    received: dict[str, Received] = Field(default_factory=dict)
    num_samples: int = 0
    capped: dict[str, SampleCap] = Field(default_factory=dict)
    update_bound: UpdateBound | None = None
    model: ModelRef | None = None


class SiloOutcome(Message):
    state: Literal["waiting", "received", "failed", "rejected"]
    reason: str | None = None
    num_samples: int | None = None     # the weight aggregation used
    capped: SampleCap | None = None    # when that is less than the silo reported


class SiloTimeline(JobTimes):
    """One silo's way through a round: the job's own steps plus where its update went after it landed."""

    submitted: datetime | None = None  # start_silo_job handed the job to the backend
    landed: datetime | None = None     # the update blob was created (its BlobCreated event)
    delivered: datetime | None = None  # the event reached on_update
    raised: datetime | None = None     # the round took the event (orchestration clock)


class RoundTimeline(Message):
    """Where a round's time went. Round steps are the round orchestration's clock (replay-safe); silo
    steps come from the components that saw them (activity, silo job, Event Grid, trigger)."""

    started: datetime
    planned: datetime | None = None         # prepare_round answered
    submitted: datetime | None = None       # every start_silo_job answered
    collected: datetime | None = None       # the last update or failure arrived (or the deadline fired)
    aggregated: datetime | None = None      # aggregate answered (it started at ``collected``)
    evaluated: datetime | None = None       # evaluate answered (it started at ``aggregated``); the round ends
    silos: dict[str, SiloTimeline] = Field(default_factory=dict)


class RoundResult(Message):
    """What a completed round returns to the run (and the run keeps, compactly, across continue_as_new)."""

    round: int
    model: ModelRef
    metrics: dict[str, float | int]
    num_samples: int
    silos: dict[str, SiloOutcome]
    timeline: RoundTimeline | None = None


class RunState(Message):
    """The run orchestration's input and its state across ``continue_as_new``."""

    run_id: str
    spec: RunSpec
    model: ModelRef | None = None      # the current global model (None before init_run)
    update_bound: UpdateBound | None = None  # fixed by init_run
    rounds: list[RoundResult] = Field(default_factory=list)
    next_round: int = 0
    started: datetime | None = None    # the run's clock at its first step


class RunOutcome(RunState):
    """``write_report``'s input: the final state and how the run ended."""

    status: Literal["completed", "failed"]
    error: str | None = None
    stop_reason: str | None = None
    ended: datetime | None = None
