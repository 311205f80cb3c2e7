"""The round protocol's vocabulary: instance ids, event and activity names, and the typed messages.

Orchestrations, activities and triggers agree on these and on nothing else. Messages hold references
(blob paths, hashes) and figures, never weights or code, because Durable keeps them in history.
Every message crosses the wire as JSON (``wire()``) and is validated again on arrival.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, field_validator

from fedfunc.contracts import JobMode, Message, ModelRef
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
START_SILO_JOBS = "start_silo_jobs"
AGGREGATE = "aggregate"
POOL_EVALUATIONS = "pool_evaluations"
WRITE_REPORT = "write_report"
OBSERVE = "observe"   # a run's or silo's milestone → MLflow tracking and domain events (fedfunc.observe)

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


def evaluated_event(silo: str) -> str:
    """An evaluate-only job's evaluation landed (a training job's lands before its update; nobody waits)."""
    return f"evaluated:{silo}"


class RoundJob(Message):
    """One round of one run: what ``federated_round`` and each of its activities work on.

    ``evaluate_only``: the round after the last one — silos evaluate the final model and nobody trains.
    """

    run_id: str
    round: int = Field(ge=0)
    spec: RunSpec
    model: ModelRef          # the global model entering this round
    nonce: str               # fresh per round; every update must carry it
    update_bound: UpdateBound | None = None  # the run's bound on ‖update − global‖₂ (None: from the spec alone)
    deadline: datetime | None = None   # set by the round from the orchestration clock
    manifest: str | None = None        # the round manifest's path, once prepare_round wrote it
    evaluate_only: bool = False

    @field_validator("deadline")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc)


class RunStart(Message):
    """``init_run``'s answer: the round-0 global model and the bound every update of the run is held to."""

    model: ModelRef
    update_bound: UpdateBound


class RoundPlan(Message):
    """What ``prepare_round`` fixed: the silos of this round, its evaluators, and where the manifest is."""

    silos: list[str]
    evaluators: list[str] = Field(default_factory=list)
    manifest: str

    def modes(self, evaluate_only: bool) -> dict[str, JobMode]:
        """Each silo's job: evaluators (and everyone in an evaluate-only round) only evaluate."""
        train = "evaluate" if evaluate_only else "train"
        return {**{s: train for s in self.silos}, **{s: "evaluate" for s in self.evaluators}}


class SiloJobsOrder(Message):
    """``start_silo_jobs``' input: the round's job, and each silo's mode in it."""

    job: RoundJob
    modes: dict[str, JobMode]


class SiloJobStarted(Message):
    """``start_silo_jobs``' answer for one silo: the job id, or why submission failed (the silo then fails
    this round)."""

    silo: str
    job_id: str | None = None
    error: str | None = None
    submitted: datetime | None = None  # the activity's clock as it handed the job to the backend


class UpdateNotice(Message):
    """Payload of ``update:{silo}`` and ``evaluated:{silo}``: which blob landed (a hint; the activities
    re-read and re-check it)."""

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
    """An accepted update as it was read, for the audit trail and the report: its sha256 when it was read
    whole, else the blob version (ETag) every range read was pinned to; the silo's metrics; its payload
    kind and the history of silo-side steps it went through (``fedfunc.pipeline``), and whether a clip
    step scaled it."""

    path: str
    sha256: str | None = None
    version: str | None = None
    metrics: dict[str, float | int]
    payload: Literal["weights", "delta", "masked"] = "weights"
    transforms: list[dict] = Field(default_factory=list)
    clipped: bool = False
    norm: float | None = None   # ‖update − global‖₂
    times: JobTimes = Field(default_factory=JobTimes)


class SampleCap(Message):
    """A silo's update weighted by fewer samples than it reported, and what capped it."""

    reported: int
    used: int
    by: str


class AggregateResult(Message):
    """``aggregate``'s answer, recorded once per round (``aggregate.json``). ``model`` (the next global model
    and the strategy's state) is None below quorum, or when the round cannot aggregate at all: ``error``
    then says why (a robust rule with too few updates, an unusable strategy state). ``selected``: the
    accepted updates whose values entered the model (Krum keeps some; every other rule all)."""

    accepted: list[str] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)
    selected: list[str] = Field(default_factory=list)
    samples: dict[str, int] = Field(default_factory=dict)
    received: dict[str, Received] = Field(default_factory=dict)
    num_samples: int = 0
    capped: dict[str, SampleCap] = Field(default_factory=dict)
    update_bound: UpdateBound | None = None
    model: ModelRef | None = None
    error: str | None = None


class EvaluationOrder(Message):
    """``pool_evaluations``' input: whose evaluation blobs to pool — ``silos``' into the pooled test figures,
    ``evaluators``' into the held-out figures."""

    job: RoundJob
    silos: list[str]
    evaluators: list[str] = Field(default_factory=list)


class RoundEvaluation(Message):
    """The pooled evaluation of the model that entered a round, recorded once (``evaluation.json``).

    ``metrics``: ``accuracy``, ``loss``, ``num_examples`` pooled over the silos' test parts, and
    ``heldout_accuracy``, ``heldout_loss``, ``heldout_num_examples`` over the evaluators' (when any).
    """

    metrics: dict[str, float | int] = Field(default_factory=dict)
    evaluated: list[str] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)


SiloState = Literal["waiting", "received", "evaluated", "failed", "rejected"]


class SiloOutcome(Message):
    state: SiloState
    reason: str | None = None
    num_samples: int | None = None     # the weight aggregation used
    capped: SampleCap | None = None    # when that is less than the silo reported
    clipped: bool | None = None        # the silo's clip step scaled its update (from the update's history)
    metrics: dict[str, float | int] | None = None   # what the silo reported (training loss, test metrics, ...)
    seconds: float | None = None                    # from the round's start until its update or failure arrived


class SiloTimeline(JobTimes):
    """One silo's way through a round: the job's own steps plus where its update went after it landed."""

    submitted: datetime | None = None  # start_silo_jobs handed the job to the backend
    landed: datetime | None = None     # the update blob was created (its BlobCreated event)
    delivered: datetime | None = None  # the event reached on_update
    raised: datetime | None = None     # the round took the event (orchestration clock)


class RoundTimeline(Message):
    """Where a round's time went. Round steps are the round orchestration's clock (replay-safe); silo
    steps come from the components that saw them (activity, silo job, Event Grid, trigger)."""

    started: datetime
    planned: datetime | None = None         # prepare_round answered
    submitted: datetime | None = None       # start_silo_jobs answered
    collected: datetime | None = None       # the last update or failure arrived (or the deadline fired)
    aggregated: datetime | None = None      # aggregate answered (it started at ``collected``)
    evaluated: datetime | None = None       # pool_evaluations answered (it started at ``collected`` too, beside
    #                                         aggregation, and again after it if aggregation rejected a silo)
    silos: dict[str, SiloTimeline] = Field(default_factory=dict)


class RoundResult(Message):
    """What a completed round returns to the run (and the run keeps, compactly, across continue_as_new).

    ``incoming``: the evaluation of the model that *entered* the round (silos evaluate it before they
    train). ``metrics``: the evaluation of the model this round produced — known one round later (or
    after the final evaluate-only round), so the run fills it in then. ``model`` is None for an
    evaluate-only round.
    """

    round: int
    model: ModelRef | None = None
    incoming: dict[str, float | int] = Field(default_factory=dict)
    metrics: dict[str, float | int] | None = None
    num_samples: int = 0
    silos: dict[str, SiloOutcome]
    started: datetime | None = None   # the run's clock when it started and got back the round
    ended: datetime | None = None
    timeline: RoundTimeline | None = None


class RunState(Message):
    """The run orchestration's input and its state across ``continue_as_new``."""

    run_id: str
    spec: RunSpec
    model: ModelRef | None = None      # the current global model (None before init_run)
    update_bound: UpdateBound | None = None  # fixed by init_run
    initial_metrics: dict[str, float | int] | None = None   # the evaluation of the round-0 model
    rounds: list[RoundResult] = Field(default_factory=list)
    next_round: int = 0
    started: datetime | None = None    # the run's clock at its first step

    def with_evaluation(self, metrics: dict[str, float | int]) -> RunState:
        """Record the evaluation of the current model (the initial one, or the last round's)."""
        if not self.rounds:
            return self.model_copy(update={"initial_metrics": metrics})
        last = self.rounds[-1].model_copy(update={"metrics": metrics})
        return self.model_copy(update={"rounds": [*self.rounds[:-1], last]})

    def latest_metrics(self) -> dict[str, float | int] | None:
        """The evaluation of the most recent model that has one."""
        for r in reversed(self.rounds):
            if r.metrics is not None:
                return r.metrics
        return self.initial_metrics


class RunOutcome(RunState):
    """``write_report``'s input: the final state and how the run ended."""

    status: Literal["completed", "failed"]
    error: str | None = None
    stop_reason: str | None = None
    ended: datetime | None = None


class RunFact(Message):
    """A milestone of a run, for observers (MLflow tracking, Event Grid domain events): figures and
    references only. ``at`` is the orchestration's clock, so a replay or a retry records the same fact."""

    kind: Literal["RunStarted", "RoundCompleted", "RunCompleted", "RunFailed", "RunCancelled"]
    run_id: str
    at: datetime
    spec: RunSpec | None = None              # RunStarted
    result: RoundResult | None = None        # RoundCompleted
    rounds_completed: int | None = None      # the end of a run
    metrics: dict[str, float | int] | None = None
    model: ModelRef | None = None
    report: dict[str, str] | None = None     # report blobs by format (json, png, html)
    error: str | None = None
    stop_reason: str | None = None


class SiloFact(Message):
    """A silo joined or left; ``occurrence`` tells one onboarding (or disabling) of a silo from the next."""

    kind: Literal["SiloOnboarded", "SiloDisabled"]
    silo: str
    at: datetime
    occurrence: str
    compute: str | None = None


Fact = Annotated[RunFact | SiloFact, Field(discriminator="kind")]
_FACT = TypeAdapter(Fact)


def parse_fact(data: dict) -> RunFact | SiloFact:
    return _FACT.validate_python(data)
