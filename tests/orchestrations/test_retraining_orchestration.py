"""``retrain_debounce`` with a scripted Durable context: uploads within the quiet period fold into one
run; an upload during that run opens the next burst (``continue_as_new``); none ends the debouncer."""
from __future__ import annotations

from datetime import timedelta

from durable_fake import T0, AnyOf, FakeContext, Orchestration, Task

from fedfunc import protocol as p
from orchestrations.retraining import UPLOAD_EVENT, retrain_debounce

JOB = {"spec": {"task": "digits", "rounds": 1}, "uploads": [], "quiet_s": 3}
RESULT = {"run": "retrain-20300101T000005", "rounds_completed": 1}


def upload(silo: str) -> dict:
    return {"silo": silo, "path": "digits/train.safetensors"}


def waiting(o: Orchestration) -> tuple[Task, Task]:
    """The outstanding upload wait and the quiet timer."""
    assert isinstance(o.pending, AnyOf)
    [event] = [t for t in o.pending.tasks if t.kind == "event"]
    [quiet] = [t for t in o.pending.tasks if t.kind == "timer"]
    assert event.name == UPLOAD_EVENT
    return event, quiet


def quiet_then_training(uploads: list[dict]) -> Orchestration:
    """Each upload arrives a second after the last; then the quiet period passes and training starts."""
    o = Orchestration(retrain_debounce, FakeContext(JOB, instance_id="retrain"))
    for i, u in enumerate(uploads):
        event, quiet = waiting(o)
        assert quiet.fire_at == o.context.current_utc_datetime + timedelta(seconds=3)
        o.context.advance(T0 + timedelta(seconds=i + 1))
        o.fire(event, u)
        assert quiet.cancelled  # each upload restarts the quiet period
        assert o.context.status == {"phase": "waiting for quiet", "uploads": i + 1}
    _, quiet = waiting(o)
    o.context.advance(T0 + timedelta(seconds=len(uploads) + 3))
    o.fire(quiet)
    return o


def test_a_burst_of_uploads_starts_one_training_run_after_the_quiet_period():
    o = quiet_then_training([upload("a"), upload("b"), upload("a")])
    train = o.pending
    assert (train.kind, train.name) == ("orchestration", p.TRAINING)
    assert train.instance_id == "retrain-20300101T000006" and train.input == {"run_id": train.instance_id,
                                                                               "spec": JOB["spec"]}
    assert o.context.status == {"phase": "training", "run": train.instance_id, "uploads": 3}
    o.send(RESULT)
    event, now = waiting(o)  # did an upload come during training?
    assert now.fire_at == o.context.current_utc_datetime
    o.fire(now)
    assert o.done and o.output == {"run": train.instance_id, "uploads": 3, "result": RESULT}
    assert o.context.continued_as_new is None


def test_an_upload_during_training_opens_the_next_burst():
    o = quiet_then_training([upload("a")])
    o.send(RESULT)
    event, _ = waiting(o)
    o.fire(event, upload("b"))
    assert o.done and o.output is None
    assert o.context.continued_as_new == {**JOB, "uploads": [upload("b")]}


def test_the_next_burst_counts_the_upload_that_opened_it():
    o = Orchestration(retrain_debounce, FakeContext({**JOB, "uploads": [upload("b")]}))
    _, quiet = waiting(o)
    o.fire(quiet)
    assert o.context.status["uploads"] == 1 and o.pending.name == p.TRAINING
