"""``federated_training``, every branch, with a scripted Durable context: the initial model, one
``federated_round`` sub-orchestration per round, early stop at the target accuracy, ``continue_as_new``
every ``checkpoint_every`` rounds, and the report written whether the run completes or fails."""
from __future__ import annotations

import pytest
from durable_fake import T0, FakeContext, Orchestration, durable_failure, model

from fedfunc import protocol as p
from fedfunc.security.update_bound import UpdateBound
from fedfunc.spec import RunSpec
from orchestrations.failures import ACTIVITY_RETRY
from orchestrations.training import federated_training

REPORT = {"json": "runs/run-1/report.json", "png": "runs/run-1/report.png"}
BOUND = UpdateBound(max_norm=12.5, source="default", how="10 × ‖initial model‖₂")


def run_state(**spec) -> p.RunState:
    return p.RunState(run_id="run-1", spec=RunSpec(**{"task": "digits", "silos": ["site-a", "site-b"], "rounds": 3, **spec}))


def round_result(r: int, **metrics) -> dict:
    outcome = p.SiloOutcome(state="received", num_samples=10)
    return p.RoundResult(round=r, model=model(r + 1), metrics={"loss": 1.0 / (r + 1), **metrics}, num_samples=20,
                         silos={"site-a": outcome, "site-b": outcome}).wire()


def started(state: p.RunState) -> Orchestration:
    """A run that asked for ``init_run`` (if it had no model) and got the round-0 model and the run's bound."""
    o = Orchestration(federated_training, FakeContext(state.wire(), instance_id=state.run_id))
    if state.model is None:
        init = o.pending
        stamped = state.model_copy(update={"started": T0}).wire()  # the run's clock at its first step
        assert (init.kind, init.name, init.retry, init.input) == ("activity", p.INIT_RUN, ACTIVITY_RETRY, stamped)
        o.send(p.RunStart(model=p.ModelRef.model_validate(model(0)), update_bound=BOUND).wire())
    return o


def play_round(o: Orchestration, r: int, **metrics) -> None:
    """Check the pending round ``r`` (its instance id, job, model) and complete it."""
    sub = o.pending
    assert (sub.kind, sub.name, sub.instance_id) == ("orchestration", p.ROUND, f"run-1:r{r}")
    job = p.RoundJob.model_validate(sub.input)
    assert (job.run_id, job.round, job.model.wire()) == ("run-1", r, model(r))
    assert job.update_bound == BOUND  # init_run's bound holds for every round, across continue_as_new
    assert o.context.status["phase"] == "training" and o.context.status["round"] == r
    o.send(round_result(r, **metrics))


def report(o: Orchestration) -> p.RunOutcome:
    write = o.pending
    assert (write.kind, write.name, write.retry) == ("activity", p.WRITE_REPORT, ACTIVITY_RETRY)
    return p.RunOutcome.model_validate(write.input)


def test_a_run_initialises_plays_every_round_and_reports():
    o = started(run_state())
    nonces = []
    for r in range(3):
        nonces.append(p.RoundJob.model_validate(o.pending.input).nonce)
        play_round(o, r, accuracy=0.5)
    assert len(set(nonces)) == 3  # a fresh nonce per round
    outcome = report(o)
    assert (outcome.status, outcome.error, outcome.stop_reason) == ("completed", None, None)
    assert [r.round for r in outcome.rounds] == [0, 1, 2] and outcome.model.wire() == model(3)
    assert (outcome.update_bound, outcome.started, outcome.ended) == (BOUND, T0, T0)
    o.send(REPORT)
    assert o.done and o.output == {"run": "run-1", "model": model(3), "metrics": {"loss": 1 / 3, "accuracy": 0.5},
                                   "rounds_completed": 3, "report": REPORT, "stop_reason": None}
    phases = [s["phase"] for s in o.context.statuses]
    assert phases[0] == "initialising" and phases[-2:] == ["reporting", "completed"]
    assert o.context.status["report"] == REPORT and len(o.context.status["history"]) == 3


def test_a_resumed_run_skips_init_and_starts_at_its_next_round():
    state = run_state().model_copy(update={"model": p.ModelRef.model_validate(model(2)), "next_round": 2,
                                           "update_bound": BOUND,
                                           "rounds": [p.RoundResult.model_validate(round_result(r)) for r in (0, 1)]})
    o = started(state)
    play_round(o, 2)
    assert [r.round for r in report(o).rounds] == [0, 1, 2]


def test_a_failed_round_is_reported_keeps_the_last_good_model_and_fails_the_run():
    o = started(run_state())
    play_round(o, 0)
    why = "round 1: 1 update(s) of 2 silo(s), quorum needs 2; b: no update before the deadline"
    o.throw(durable_failure(why))
    outcome = report(o)
    assert (outcome.status, outcome.error) == ("failed", why)  # the round's own message, not Durable's payload
    assert outcome.model.wire() == model(1) and [r.round for r in outcome.rounds] == [0]
    assert o.context.status["phase"] == "failed" and o.context.status["error"] == why
    with pytest.raises(RuntimeError) as err:
        o.send(REPORT)
    assert str(err.value) == f"run run-1 stopped at round 1: {why}"


def test_the_target_accuracy_stops_the_run_early():
    o = started(run_state(rounds=5, target_accuracy=0.9))
    play_round(o, 0, accuracy=0.8)
    play_round(o, 1, accuracy=0.95)
    outcome = report(o)
    assert outcome.stop_reason == "target accuracy 0.9 reached at round 1" and len(outcome.rounds) == 2
    o.send(REPORT)
    assert o.output["stop_reason"] == outcome.stop_reason and o.output["rounds_completed"] == 2


def test_metrics_without_accuracy_never_stop_a_run_with_a_target():
    o = started(run_state(rounds=2, target_accuracy=0.5))
    play_round(o, 0)
    play_round(o, 1)
    assert report(o).stop_reason is None


def test_every_checkpoint_continues_as_new_with_a_compact_state_until_the_last_round():
    o = started(run_state(rounds=5, checkpoint_every=2))
    play_round(o, 0)
    play_round(o, 1)
    assert o.done and o.output is None  # continued as new: this execution's history ends here
    state = p.RunState.model_validate(o.context.continued_as_new)
    assert (state.next_round, state.model.wire(), [r.round for r in state.rounds]) == (2, model(2), [0, 1])
    assert (state.update_bound, state.started) == (BOUND, T0)

    o = started(state)
    play_round(o, 2)
    play_round(o, 3)
    state = p.RunState.model_validate(o.context.continued_as_new)
    assert state.next_round == 4

    o = started(state)
    play_round(o, 4)
    assert o.context.continued_as_new is None  # the last round goes to the report, not to a new execution
    assert [r.round for r in report(o).rounds] == [0, 1, 2, 3, 4]


def test_a_checkpoint_on_the_last_round_reports_instead():
    o = started(run_state(rounds=2, checkpoint_every=2))
    play_round(o, 0)
    play_round(o, 1)
    assert o.context.continued_as_new is None and report(o).status == "completed"
