"""A scripted Durable orchestration context, to unit-test orchestrators the way Microsoft's Durable
samples do for Python: call the orchestrator function with a mocked context, drive its generator (send
each yielded task's result, throw a failed task's exception) and check the actions it yields.

The fake answers only what ``DurableOrchestrationContext`` has (``test_fake_context_matches_the_sdk``),
and everything crossing it goes through JSON, as it does in Durable's history. ``task_any`` hands the
orchestrator the winning task object and ``task_all`` the list of results, as the SDK does.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fedfunc.contracts import ModelRef

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def wire(value):
    """What Durable stores and hands back: JSON only."""
    return None if value is None else json.loads(json.dumps(value))


@dataclass(eq=False)
class Task:
    """One durable task the orchestrator asked for: an activity, sub-orchestration, external event or timer."""

    kind: str                  # "activity" | "orchestration" | "event" | "timer"
    name: str                  # activity / orchestration / event name; "timer" for timers
    input: object = None
    retry: object = None       # RetryOptions of call_activity_with_retry
    instance_id: str | None = None
    fire_at: datetime | None = None
    result: object = None
    error: Exception | None = None  # a failed task: raised where the orchestrator yields it
    is_completed: bool = False
    cancelled: bool = False

    def cancel(self) -> None:
        assert self.kind == "timer", "only timers can be cancelled"
        assert not self.is_completed, "a timer that fired cannot be cancelled"
        self.cancelled = True

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


@dataclass(eq=False)
class AnyOf:
    tasks: list[Task]


@dataclass(eq=False)
class AllOf:
    tasks: list[Task]


class FakeContext:
    """The orchestration's view of Durable, scripted by the test."""

    def __init__(self, input_: object, *, now: datetime = T0, instance_id: str = "instance-1"):
        self._input = wire(input_)
        self._now = now
        self._instance_id = instance_id
        self._uuids = 0
        self._replaying = False
        self.statuses: list[dict] = []          # every set_custom_status, in order
        self.continued_as_new: object = None    # the input given to continue_as_new, if called
        self.created: list[Task] = []           # every task asked for, yielded or not

    # --- what DurableOrchestrationContext offers ---------------------------------------------------
    @property
    def current_utc_datetime(self) -> datetime:
        return self._now

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def is_replaying(self) -> bool:
        return self._replaying  # False unless the test replays steps from history (``replaying``)

    def get_input(self, expected_type=None):
        return wire(self._input)

    def call_activity(self, name, input_=None, expected_type=None) -> Task:
        return self._task("activity", name, wire(input_))

    def call_activity_with_retry(self, name, retry_options, input_=None, expected_type=None) -> Task:
        return self._task("activity", name, wire(input_), retry=retry_options)

    def call_sub_orchestrator(self, name, input_=None, instance_id=None, version=None, expected_type=None) -> Task:
        return self._task("orchestration", name, wire(input_), instance_id=instance_id)

    def wait_for_external_event(self, name, expected_type=None) -> Task:
        return self._task("event", name)

    def create_timer(self, fire_at) -> Task:
        return self._task("timer", "timer", fire_at=fire_at)

    def task_any(self, activities) -> AnyOf:
        return AnyOf(list(activities))

    def task_all(self, activities) -> AllOf:
        return AllOf(list(activities))

    def set_custom_status(self, status) -> None:
        self.statuses.append(wire(status))

    def new_uuid(self) -> str:
        self._uuids += 1
        return str(uuid.UUID(int=self._uuids))

    def continue_as_new(self, input_) -> None:
        self.continued_as_new = wire(input_)

    def _task(self, *args, **kwargs) -> Task:
        self.created.append(Task(*args, **kwargs))
        return self.created[-1]

    # --- for the test -----------------------------------------------------------------------------
    def advance(self, to: datetime) -> None:
        """The orchestration clock at the next replay step (Durable's clock only moves between yields)."""
        self._now = to

    def replaying(self, flag: bool) -> None:
        """Whether the next steps are replayed from history (Durable runs them again before the new ones)."""
        self._replaying = flag

    @property
    def status(self) -> dict:
        return self.statuses[-1]


@dataclass
class Orchestration:
    """One execution of an orchestrator: ``pending`` is what it yielded last; ``send``/``fire``/``throw``
    complete it and run the orchestrator to its next yield (or its end: ``done``, ``output``)."""

    orchestrator: object
    context: FakeContext
    pending: object = None
    done: bool = False
    output: object = None
    _gen: object = field(default=None, repr=False)

    def __post_init__(self):
        function = self.orchestrator.build().get_user_function().orchestrator_function
        self._gen = function(self.context)
        self._advance(lambda: next(self._gen))

    def _advance(self, step) -> object:
        try:
            self.pending = step()
            while isinstance(self.pending, Task) and self.pending.is_completed:
                # a task yielded again once done (a task_any's winner): the SDK goes on at once
                done = self.pending
                self.pending = self._gen.throw(done.error) if done.error else self._gen.send(done.result)
        except StopIteration as stop:
            self.pending, self.done, self.output = None, True, wire(stop.value)
        return self.pending

    def send(self, result=None):
        """Complete the pending task (or ``task_all``) with ``result``."""
        assert not isinstance(self.pending, AnyOf), "a task_any is completed by fire(task)"
        if isinstance(self.pending, Task):
            self.pending.result, self.pending.is_completed = wire(result), True
        return self._advance(lambda: self._gen.send(wire(result)))

    def fire(self, task: Task, result=None, *, error: Exception | None = None):
        """``task`` wins the pending ``task_any`` (an event raised, a timer fired, an activity done, or with
        ``error`` failed: the SDK hands a task_any its failed task, and raises only where it is yielded)."""
        assert isinstance(self.pending, AnyOf) and task in self.pending.tasks, f"{task} is not awaited"
        assert not task.cancelled, f"{task} was cancelled"
        task.result, task.error, task.is_completed = wire(result), error, True
        return self._advance(lambda: self._gen.send(task))

    def throw(self, error: Exception):
        """The pending task failed (Durable raises the failure inside the orchestrator)."""
        return self._advance(lambda: self._gen.throw(error))


def model(round_: int, run: str = "run-1") -> dict:
    """A global model reference as the activities return it (the hash only has to be well formed)."""
    return ModelRef(path=f"{run}/round-{round_:04d}/global.safetensors", sha256=f"{round_:064x}").wire()


def durable_failure(message: str) -> Exception:
    """What Durable raises in an orchestrator whose awaited activity or sub-orchestration failed: the
    failure's reason (for a sub-orchestration, its own message plus its serialized state) and details."""
    state = json.dumps({"isDone": False, "actions": [], "output": None})
    return Exception(f"{message}\n\n$OutOfProcData$:{state} \n Traceback (most recent call last): ...")
