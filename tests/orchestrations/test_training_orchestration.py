"""``federated_training``, every branch, with a scripted Durable context: the initial model and the run's
update bound, one ``federated_round`` sub-orchestration per round (each reporting the pooled evaluation of
the model that entered it), the final evaluate-only round, early stop at the target accuracy,
``continue_as_new`` every ``checkpoint_every`` rounds, the report written whether the run completes or
fails, and each milestone told to ``observe``: ``RunStarted``; ``RoundCompleted`` for round r once its
model's pooled figures are known (from round r+1, or the evaluate-only round); ``RunCompleted`` or
``RunFailed``."""
from __future__ import annotations

from datetime import timedelta

import pytest
from durable_fake import T0, FakeContext, Orchestration, durable_failure, model

from fedfunc import protocol as p
from fedfunc.security.update_bound import UpdateBound
from fedfunc.spec import RunSpec
from orchestrations.failures import ACTIVITY_RETRY
from orchestrations.training import federated_training

REPORT = {"json": "runs/run-1/report.json", "png": "runs/run-1/report.png", "html": "runs/run-1/report.html"}
BOUND = UpdateBound(max_norm=12.5, source="default", how="default: 10 × ‖initial model‖₂")


def run_state(**spec) -> p.RunState:
    return p.RunState(run_id="run-1", spec=RunSpec(**{"task": "digits", "silos": ["ann", "bob"], "rounds": 3, **spec}))


def round_result(r: int, evaluate_only: bool = False, **incoming) -> dict:
    """Round ``r``'s result: the pooled figures of the model that entered it (loss 1/(r+1) unless given)."""
    state = "evaluated" if evaluate_only else "received"
    outcome = p.SiloOutcome(state=state, num_samples=None if evaluate_only else 10)
    return p.RoundResult(round=r, model=None if evaluate_only else model(r + 1),
                         incoming={"loss": 1.0 / (r + 1), **incoming}, num_samples=0 if evaluate_only else 20,
                         silos={"ann": outcome, "bob": outcome}).wire()


def observed(o: Orchestration, kind: str, *, complete: bool = True) -> p.RunFact:
    """The pending ``observe`` of a ``kind`` milestone (retried like every activity), completed unless not
    ``complete``. Its time is the orchestration's clock, so a replay tells the same fact."""
    task = o.pending
    assert (task.kind, task.name, task.retry) == ("activity", p.OBSERVE, ACTIVITY_RETRY), task
    fact = p.parse_fact(task.input)
    assert (fact.kind, fact.run_id, fact.at) == (kind, "run-1", o.context.current_utc_datetime)
    if complete:
        o.send(None)
    return fact


def started(state: p.RunState, now=T0) -> Orchestration:
    """A run that asked for ``init_run`` (if it had no model), got the round-0 model and its update bound,
    and told ``RunStarted``."""
    o = Orchestration(federated_training, FakeContext(state.wire(), instance_id=state.run_id, now=now))
    o.played = {}  # round → (started, ended) on the run's clock, as play_round completed it
    if state.model is None:
        init = o.pending
        stamped = state.model_copy(update={"started": now}).wire()  # the run's clock at its first step
        assert (init.kind, init.name, init.retry, init.input) == ("activity", p.INIT_RUN, ACTIVITY_RETRY, stamped)
        o.send(p.RunStart(model=p.ModelRef.model_validate(model(0)), update_bound=BOUND).wire())
        assert observed(o, "RunStarted").spec == state.spec
    return o


def play_round(o: Orchestration, r: int, evaluate_only: bool = False, seconds: float = 30, **incoming) -> p.RoundJob:
    """Check the pending round ``r`` (its instance id, job, model, bound) and complete it after ``seconds``
    on the orchestration clock. Its figures are those of round r−1's model: round r−1 is then told complete,
    with them (round 0's are the initial model's, and nothing is told)."""
    sub = o.pending
    assert (sub.kind, sub.name, sub.instance_id) == ("orchestration", p.ROUND, f"run-1:r{r}")
    job = p.RoundJob.model_validate(sub.input)
    assert (job.run_id, job.round, job.model.wire(), job.evaluate_only) == ("run-1", r, model(r), evaluate_only)
    assert job.update_bound == BOUND  # every round holds updates to the run's bound, across continue_as_new
    assert o.context.status["phase"] == ("evaluating" if evaluate_only else "training")
    assert o.context.status["round"] == r
    start = o.context.current_utc_datetime
    o.context.advance(start + timedelta(seconds=seconds))
    o.send(result := round_result(r, evaluate_only, **incoming))
    o.played[r] = (start, o.context.current_utc_datetime)
    if r > 0:
        fact = observed(o, "RoundCompleted")
        assert (fact.result.round, fact.result.metrics, fact.result.model.wire()) == (r - 1, result["incoming"], model(r))
        if r - 1 in o.played:  # played by this execution (else by one before a continue_as_new)
            assert (fact.result.started, fact.result.ended) == o.played[r - 1]
    return job


def report(o: Orchestration) -> p.RunOutcome:
    write = o.pending
    assert (write.kind, write.name, write.retry) == ("activity", p.WRITE_REPORT, ACTIVITY_RETRY)
    return p.RunOutcome.model_validate(write.input)


def told(o: Orchestration) -> list[str]:
    return [p.parse_fact(t.input).kind for t in o.context.created if t.name == p.OBSERVE]


def test_a_run_initialises_plays_every_round_and_reports():
    o = started(run_state())
    nonces = []
    for r in range(3):
        nonces.append(play_round(o, r, accuracy=0.5 + r / 10).nonce)
    nonces.append(play_round(o, 3, evaluate_only=True, accuracy=0.9).nonce)  # the final model, evaluated
    assert len(set(nonces)) == 4  # a fresh nonce per round
    outcome = report(o)
    assert (outcome.status, outcome.error, outcome.stop_reason) == ("completed", None, None)
    assert [r.round for r in outcome.rounds] == [0, 1, 2] and outcome.model.wire() == model(3)
    # Each round's figures are those of the model it produced, measured by the next round's silos.
    assert outcome.initial_metrics == {"loss": 1.0, "accuracy": 0.5}
    assert [r.metrics["accuracy"] for r in outcome.rounds] == [0.6, 0.7, 0.9]
    assert [(r.started, r.ended) for r in outcome.rounds] == [o.played[r] for r in range(3)]
    assert (outcome.update_bound, outcome.started, outcome.ended) == (BOUND, T0, T0 + timedelta(seconds=120))
    o.send(REPORT)
    done = observed(o, "RunCompleted")
    assert (done.rounds_completed, done.model.wire(), done.report, done.metrics, done.stop_reason) == (
        3, model(3), REPORT, {"loss": 0.25, "accuracy": 0.9}, None)
    assert o.done and o.output == {"run": "run-1", "model": model(3), "metrics": {"loss": 0.25, "accuracy": 0.9},
                                   "rounds_completed": 3, "report": REPORT, "stop_reason": None}
    assert told(o) == ["RunStarted", "RoundCompleted", "RoundCompleted", "RoundCompleted", "RunCompleted"]
    phases = [s["phase"] for s in o.context.statuses]
    assert phases[0] == "initialising" and phases[-3:] == ["evaluating", "reporting", "completed"]
    assert o.context.status["report"] == REPORT
    assert "history" not in o.context.status  # the rounds are in the round record, not in the capped status
    assert o.context.status["metrics"] == {"loss": 0.25, "accuracy": 0.9}
    assert o.context.status["initial_metrics"] == {"loss": 1.0, "accuracy": 0.5}


def test_a_resumed_run_skips_init_and_starts_at_its_next_round():
    state = run_state().model_copy(update={"model": p.ModelRef.model_validate(model(2)), "next_round": 2,
                                           "update_bound": BOUND, "started": T0,
                                           "rounds": [p.RoundResult.model_validate(round_result(r)) for r in (0, 1)]})
    o = started(state, now=T0 + timedelta(hours=1))
    play_round(o, 2)
    play_round(o, 3, evaluate_only=True)
    outcome = report(o)
    assert [r.round for r in outcome.rounds] == [0, 1, 2]
    assert outcome.started == T0  # the run's start, not this execution's
    assert told(o) == ["RoundCompleted", "RoundCompleted"]  # no second RunStarted


def test_a_resumed_run_with_every_round_evaluated_reports_at_once():
    rounds = [p.RoundResult.model_validate(round_result(r)).model_copy(update={"metrics": {"loss": 0.1}})
              for r in range(3)]
    state = run_state().model_copy(update={"model": p.ModelRef.model_validate(model(3)), "next_round": 3,
                                           "update_bound": BOUND, "started": T0, "rounds": rounds})
    o = started(state)
    outcome = report(o)
    assert (outcome.status, len(outcome.rounds)) == ("completed", 3)
    assert not any(t.kind == "orchestration" for t in o.context.created)


def test_a_failed_round_is_reported_keeps_the_last_good_model_and_fails_the_run():
    o = started(run_state())
    play_round(o, 0)
    why = "round 1: 1 update(s) of 2 silo(s), quorum needs 2; bob: no result before the deadline"
    o.throw(durable_failure(why))
    outcome = report(o)
    assert (outcome.status, outcome.error) == ("failed", why)  # the round's own message, not Durable's payload
    assert outcome.model.wire() == model(1) and [r.round for r in outcome.rounds] == [0]
    assert outcome.rounds[0].metrics is None  # round 0's model was never evaluated
    assert o.context.status["phase"] == "failed" and o.context.status["error"] == why
    o.send(REPORT)
    fact = observed(o, "RunFailed", complete=False)
    assert (fact.error, fact.rounds_completed, fact.model.wire(), fact.report) == (why, 1, model(1), REPORT)
    with pytest.raises(RuntimeError) as err:
        o.send(None)
    assert str(err.value) == f"run run-1 stopped at round 1: {why}"
    assert told(o) == ["RunStarted", "RunFailed"]  # round 0 is never told complete: its figures never came


def test_a_failed_evaluate_only_round_fails_the_run_with_every_trained_round_kept():
    o = started(run_state(rounds=1))
    play_round(o, 0)
    assert p.RoundJob.model_validate(o.pending.input).evaluate_only
    o.throw(durable_failure("storage unavailable"))
    outcome = report(o)
    assert (outcome.status, outcome.error, outcome.model.wire()) == ("failed", "storage unavailable", model(1))
    assert [r.round for r in outcome.rounds] == [0]
    o.send(REPORT)
    assert observed(o, "RunFailed", complete=False).rounds_completed == 1
    with pytest.raises(RuntimeError, match="^run run-1 stopped at round 1: storage unavailable$"):
        o.send(None)
    assert told(o) == ["RunStarted", "RunFailed"]  # round 0's figures never came: it is not told complete


def test_the_target_accuracy_stops_the_run_at_the_first_model_that_reaches_it():
    """Round 2's silos find round 1's model at the target: the run stops with that model, and round 2's
    training is not adopted (nor is an evaluate-only round needed)."""
    o = started(run_state(rounds=5, target_accuracy=0.9))
    play_round(o, 0, accuracy=0.3)
    play_round(o, 1, accuracy=0.8)
    play_round(o, 2, accuracy=0.95)
    outcome = report(o)
    assert outcome.stop_reason == ("target accuracy 0.9 reached by the model of round 1 (pooled test accuracy "
                                   "0.9500, evaluated by the silos in round 2); round 2's training was not adopted")
    assert len(outcome.rounds) == 2 and outcome.model.wire() == model(2) and outcome.rounds[-1].metrics["accuracy"] == 0.95
    o.send(REPORT)
    assert observed(o, "RunCompleted").stop_reason == outcome.stop_reason
    assert o.output["stop_reason"] == outcome.stop_reason and o.output["rounds_completed"] == 2
    assert o.output["model"] == model(2)


def test_an_initial_model_at_the_target_stops_the_run_before_any_training_is_adopted():
    o = started(run_state(target_accuracy=0.9))
    play_round(o, 0, accuracy=0.9)  # at the target counts as reaching it
    outcome = report(o)
    assert outcome.stop_reason.startswith("target accuracy 0.9 reached by the initial model (pooled test accuracy 0.9000")
    assert (outcome.rounds, outcome.model.wire(), outcome.initial_metrics) == ([], model(0), {"loss": 1.0, "accuracy": 0.9})
    o.send(REPORT)
    assert observed(o, "RunCompleted").metrics == {"loss": 1.0, "accuracy": 0.9}
    assert (o.output["rounds_completed"], o.output["model"]) == (0, model(0))
    assert told(o) == ["RunStarted", "RunCompleted"]


def test_metrics_below_or_without_accuracy_never_stop_a_run_with_a_target():
    o = started(run_state(rounds=2, target_accuracy=0.5))
    play_round(o, 0)
    play_round(o, 1, accuracy=0.49)
    play_round(o, 2, evaluate_only=True, accuracy=0.99)  # the final model's figures stop nothing: the run is over
    outcome = report(o)
    assert outcome.stop_reason is None and outcome.rounds[-1].metrics["accuracy"] == 0.99


def test_every_checkpoint_continues_as_new_with_a_compact_state_until_the_last_round():
    o = started(run_state(rounds=5, checkpoint_every=2))
    play_round(o, 0)
    play_round(o, 1)
    assert o.done and o.output is None  # continued as new: this execution's history ends here
    state = p.RunState.model_validate(o.context.continued_as_new)
    assert (state.next_round, state.model.wire(), [r.round for r in state.rounds]) == (2, model(2), [0, 1])
    assert (state.update_bound, state.started) == (BOUND, T0)
    assert state.rounds[-1].metrics is None and state.rounds[0].metrics == {"loss": 0.5}
    assert o.context.status["phase"] == "training" and o.context.status["round"] == 2

    o = started(state, now=T0 + timedelta(minutes=5))
    play_round(o, 2)  # tells round 1 complete: its result came through continue_as_new
    play_round(o, 3)
    state = p.RunState.model_validate(o.context.continued_as_new)
    assert state.next_round == 4

    o = started(state, now=T0 + timedelta(minutes=10))
    play_round(o, 4)
    play_round(o, 5, evaluate_only=True)
    assert o.context.continued_as_new is None  # the last round goes to the report, not to a new execution
    outcome = report(o)
    assert [r.round for r in outcome.rounds] == [0, 1, 2, 3, 4] and outcome.started == T0
    assert all(r.metrics is not None for r in outcome.rounds)


def test_a_checkpoint_on_the_last_round_reports_instead():
    o = started(run_state(rounds=2, checkpoint_every=2))
    play_round(o, 0)
    play_round(o, 1)
    play_round(o, 2, evaluate_only=True)
    assert o.context.continued_as_new is None and report(o).status == "completed"
