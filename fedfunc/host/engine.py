"""Orchestration dispatch: feed histories to the app's orchestrator functions (the real SDK
replays them), turn the actions they return into history, activities, timers and
sub-orchestrations, and keep all of it in the store so a restart resumes every instance.

Task ids must match the ids the SDK assigns: user tasks in the order they are yielded,
plus one id per retry timer and per re-attempt, assigned when the SDK replays the failure
or the timer. So an episode that carries a retry-related event carries only that event;
then the host knows the retry ids come first and the user's new tasks follow.
"""
from __future__ import annotations

import json
import logging
import threading
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from fedfunc.host import events as ev
from fedfunc.host.app_loader import App
from fedfunc.host.invoke import Invoker, logged
from fedfunc.host.store import Store

log = logging.getLogger("fedfunc.host")

TERMINAL = ("Completed", "Failed", "Terminated")
ID_TAKING = {0, 1, 2, 3, 5}  # activity, activity+retry, sub, sub+retry, timer
WAIT_EVENT, CONTINUE_AS_NEW = 6, 4
MAX_BATCH = 500
_OUT_OF_PROC = "$OutOfProcData$:"


class NotFound(LookupError):
    pass


class Gone(RuntimeError):
    """The instance has already finished."""


class UnknownFunction(ValueError):
    pass


def _fresh_engine() -> dict:
    return {"next_id": 0, "ids": [], "retry_tasks": {}, "retry_timers": {}}


def _flatten(actions: list) -> list[dict]:
    """Depth-first, in the order the SDK assigned ids."""
    out: list[dict] = []
    for a in actions:
        if isinstance(a, list):
            out.extend(_flatten(a))
        elif "compoundActions" in a:
            out.extend(_flatten(a["compoundActions"]))
        else:
            out.append(a)
    return out


class Engine:
    def __init__(self, app: App, store: Store, invoker: Invoker,
                 max_activities: int = 8, orchestrator_threads: int = 4):
        self.app, self.store, self.invoker = app, store, invoker
        self._activities = ThreadPoolExecutor(max_activities, thread_name_prefix="activity")
        self._episodes = ThreadPoolExecutor(orchestrator_threads, thread_name_prefix="orchestrator")
        self._sched = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._timer_wake = threading.Condition()
        self._stopping = False
        self._timer_thread = threading.Thread(target=self._timer_loop, name="durable-timers", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Resume after a restart: re-run activities that never reported back (at-least-once),
        then replay every instance with undelivered events; timers re-arm from the store."""
        for row in self.store.query("SELECT * FROM activities"):
            self._submit_activity(row["instance_id"], row["execution"], row["task_id"], row["name"], row["input"])
        for row in self.store.query("SELECT DISTINCT instance_id FROM inbox"):
            self.notify(row["instance_id"])
        self._timer_thread.start()

    def stop(self) -> None:
        self._stopping = True
        with self._timer_wake:
            self._timer_wake.notify_all()
        self._episodes.shutdown(wait=True, cancel_futures=True)
        self._activities.shutdown(wait=False, cancel_futures=True)  # unfinished ones re-run at restart
        if self._timer_thread.is_alive():
            self._timer_thread.join(5)

    # ---- client operations -------------------------------------------------------------------
    def start_new(self, name: str, instance_id: str | None = None, input_text: str | None = None) -> str:
        if not self.app.get(name, "orchestrationTrigger"):
            raise UnknownFunction(f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function.")
        instance_id = instance_id or uuid.uuid4().hex
        with self.store.tx() as db:
            self._create(db, instance_id, name, input_text, None)
        self.notify(instance_id)
        return instance_id

    def raise_event(self, instance_id: str, name: str, data_text: str | None) -> None:
        with self.store.tx() as db:
            self._require_running(db, instance_id)
            self._post(db, instance_id, None, ev.event(ev.EVENT_RAISED, Name=name, Input=data_text))
        self.notify(instance_id)

    def terminate(self, instance_id: str, reason: str) -> None:
        with self.store.tx() as db:
            self._require_running(db, instance_id)
            self._post(db, instance_id, None, ev.event(ev.EXECUTION_TERMINATED, Input=json.dumps(reason)))
        self.notify(instance_id)

    def purge(self, instance_id: str) -> int:
        with self.store.tx() as db:
            return self._delete(db, instance_id, keep_row=False)

    def status(self, instance_id: str, show_history: bool = False, show_input: bool = True) -> dict | None:
        row = self.store.one("SELECT * FROM instances WHERE id=?", (instance_id,))
        if row is None:
            return None
        out = {"name": row["name"], "instanceId": row["id"], "runtimeStatus": row["status"],
               "input": _loads(row["input"]) if show_input else None, "output": _loads(row["output"]),
               "customStatus": _loads(row["custom_status"]),
               "createdTime": row["created"], "lastUpdatedTime": row["updated"]}
        if show_history:
            out["historyEvents"] = [json.loads(r["event"]) for r in self.store.query(
                "SELECT event FROM history WHERE instance_id=? ORDER BY seq", (instance_id,))]
        return out

    def list_instances(self, statuses: list[str] | None = None, created_from: str | None = None,
             created_to: str | None = None, prefix: str | None = None, show_input: bool = False) -> list[dict]:
        sql, args = "SELECT id FROM instances WHERE 1=1", []
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        if created_from:
            sql += " AND created >= ?"
            args.append(ev.iso(ev.parse_iso(created_from)))
        if created_to:
            sql += " AND created <= ?"
            args.append(ev.iso(ev.parse_iso(created_to)))
        if prefix:
            sql += " AND substr(id, 1, ?) = ?"
            args += [len(prefix), prefix]
        return [self.status(r["id"], show_input=show_input) for r in self.store.query(sql + " ORDER BY created", tuple(args))]

    # ---- store helpers (inside a transaction) ------------------------------------------------
    def _require_running(self, db, instance_id: str) -> None:
        row = db.execute("SELECT status FROM instances WHERE id=?", (instance_id,)).fetchone()
        if row is None:
            raise NotFound(f"No instance with ID '{instance_id}' found.")
        if row["status"] in TERMINAL:
            raise Gone(f"Instance with ID '{instance_id}' is gone: it is {row['status']}.")

    @staticmethod
    def _post(db, instance_id: str, execution: int | None, event: dict) -> None:
        db.execute("INSERT INTO inbox (instance_id, execution, event) VALUES (?,?,?)",
                   (instance_id, execution, json.dumps(event)))

    @staticmethod
    def _delete(db, instance_id: str, keep_row: bool) -> int:
        for table in ("history", "inbox", "activities", "timers"):
            db.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        if keep_row:
            return 0
        return db.execute("DELETE FROM instances WHERE id=?", (instance_id,)).rowcount

    def _create(self, db, instance_id: str, name: str, input_text: str | None, parent: tuple | None) -> None:
        """A new instance, or a fresh start of an existing id (the old state is replaced)."""
        old = db.execute("SELECT execution FROM instances WHERE id=?", (instance_id,)).fetchone()
        execution = (old["execution"] + 1) if old else 1
        self._delete(db, instance_id, keep_row=False)
        now = ev.iso(ev.utcnow())
        parent_id, parent_exec, parent_task = parent or (None, None, None)
        db.execute("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (instance_id, name, execution, "Pending", input_text, None, None, now, now,
                    parent_id, parent_exec, parent_task, json.dumps(_fresh_engine())))
        self._post(db, instance_id, execution, ev.event(ev.EXECUTION_STARTED, Name=name, Input=input_text,
                                                        Version=None, ParentInstanceId=parent_id))

    # ---- scheduling ------------------------------------------------------------------------
    def notify(self, instance_id: str) -> None:
        """Run episodes for this instance; never two at once for one instance."""
        with self._sched:
            if instance_id in self._running:
                self._again.add(instance_id)
                return
            self._running.add(instance_id)
        if not self._stopping:
            self._episodes.submit(self._drain, instance_id)

    def _drain(self, instance_id: str) -> None:
        while True:
            with self._sched:
                self._again.discard(instance_id)
            try:
                while not self._stopping and self._episode(instance_id):
                    pass
            except Exception:
                log.exception("host error while running instance %s", instance_id)
            with self._sched:
                if instance_id not in self._again or self._stopping:
                    self._running.discard(instance_id)
                    return

    # ---- one episode ---------------------------------------------------------------------------
    def _episode(self, instance_id: str) -> bool:
        inst = self.store.one("SELECT * FROM instances WHERE id=?", (instance_id,))
        inbox = self.store.query("SELECT seq, execution, event FROM inbox WHERE instance_id=? ORDER BY seq LIMIT 5000",
                                 (instance_id,))
        if not inbox:
            return False
        if inst is None or inst["status"] in TERMINAL:
            with self.store.tx() as db:  # late completions, events after the end, purged instances
                db.execute(f"DELETE FROM inbox WHERE seq IN ({','.join(str(r['seq']) for r in inbox)})")
            return False
        execution = inst["execution"]
        stale = [r["seq"] for r in inbox if r["execution"] not in (None, execution)]
        items = [(r["seq"], json.loads(r["event"])) for r in inbox if r["execution"] in (None, execution)]
        terminate = next(((s, e) for s, e in items if e["EventType"] == ev.EXECUTION_TERMINATED), None)
        if terminate:
            with self.store.tx() as db:
                parent = self._finish(db, inst, "Terminated", terminate[1]["Input"], [terminate[1]])
                self._drop(db, stale + [s for s, _ in items])
            if parent:
                self.notify(parent)
            return False
        engine = json.loads(inst["engine"])
        history = [json.loads(r["event"]) for r in self.store.query(
            "SELECT event FROM history WHERE instance_id=? ORDER BY seq", (instance_id,))]
        batch = self._choose_batch(items, engine, bool(history))
        if not batch:
            with self.store.tx() as db:
                self._drop(db, stale)
            return bool(stale)
        return self._run_batch(inst, engine, history, batch, stale)

    def _is_retry_event(self, e: dict, engine: dict) -> bool:
        t = e["EventType"]
        if t in (ev.TASK_FAILED, ev.SUB_FAILED):
            return str(e["TaskScheduledId"]) in engine["retry_tasks"]
        return t == ev.TIMER_FIRED and str(e["TimerId"]) in engine["retry_timers"]

    def _choose_batch(self, items: list, engine: dict, started: bool) -> list:
        if not started:  # a new execution: its ExecutionStarted goes first
            first = next(((s, e) for s, e in items if e["EventType"] == ev.EXECUTION_STARTED), None)
            if first is None:
                return []
            items = [first] + [(s, e) for s, e in items if s != first[0] and e["EventType"] != ev.EXECUTION_STARTED]
        batch = []
        for seq, e in items[:MAX_BATCH]:
            if self._is_retry_event(e, engine):
                return batch or [(seq, e)]
            batch.append((seq, e))
        return batch

    def _run_batch(self, inst, engine: dict, history: list, batch: list, stale: list) -> bool:
        instance_id, execution = inst["id"], inst["execution"]
        new_events = [e for _, e in batch]
        scheduled: list[dict] = []
        work: list[tuple] = []  # ("activity", id, name, input) | ("sub", id, name, input, child) | ("timer", id, fire_at)
        if len(new_events) == 1 and self._is_retry_event(new_events[0], engine):
            self._retry_step(new_events[0], engine, scheduled, work)
        for e in new_events:  # a retried call that succeeded needs no retry bookkeeping (nor its input) any more
            if e["EventType"] in (ev.TASK_COMPLETED, ev.SUB_COMPLETED):
                engine["retry_tasks"].pop(str(e["TaskScheduledId"]), None)
        started = next((e for e in history + new_events if e["EventType"] == ev.EXECUTION_STARTED), {})
        context = {"history": [dict(e, IsPlayed=True) for e in history]
                   + [ev.event(ev.ORCHESTRATOR_STARTED)] + new_events,
                   "input": started.get("Input"), "instanceId": instance_id, "isReplaying": False,
                   "parentInstanceId": inst["parent_id"], "upperSchemaVersion": 1, "upperSchemaVersionNew": 2}
        f = self.app.get(inst["name"], "orchestrationTrigger")
        state, error = None, None
        if f is None:
            error = f"no orchestrator function named '{inst['name']}' in this app"
        else:
            try:
                with logged("orchestrator", inst["name"], instance_id):
                    state = json.loads(f.fn(json.dumps(context)))
            except Exception as exc:
                error = str(exc).split(_OUT_OF_PROC)[0].strip()
        appended = context["history"][len(history):]
        children: list[str] = []
        with self.store.tx() as db:
            now_row = db.execute("SELECT execution, status FROM instances WHERE id=?", (instance_id,)).fetchone()
            if now_row is None or now_row["execution"] != execution or now_row["status"] in TERMINAL:
                return True  # purged, restarted or terminated while this episode ran: discard it
            self._drop(db, stale + [s for s, _ in batch])
            if error is None:
                error = self._apply_actions(db, inst, engine, state, scheduled, work, children)
            seq = len(history)
            for e in appended + scheduled + [ev.event(ev.ORCHESTRATOR_COMPLETED)]:
                db.execute("INSERT INTO history VALUES (?,?,?)", (instance_id, seq, json.dumps(e)))
                seq += 1
            custom = state.get("customStatus") if state else None
            now = ev.iso(ev.utcnow())
            db.execute("UPDATE instances SET status='Running', engine=?, updated=?, custom_status=? WHERE id=?",
                       (json.dumps(engine), now, json.dumps(custom) if custom is not None else None, instance_id))
            parent = None
            if error is not None:
                work.clear()
                parent = self._finish(db, inst, "Failed", json.dumps(error), [])
            elif state.get("isDone"):
                cont = next((a for a in _flatten(state["actions"]) if a.get("actionType") == CONTINUE_AS_NEW), None)
                if cont is not None:
                    self._continue_as_new(db, inst, cont.get("input"))
                else:
                    parent = self._finish(db, inst, "Completed", json.dumps(state.get("output")), [])
            if parent:
                children.append(parent)
        for kind, *rest in work:
            if kind == "activity":
                self._submit_activity(instance_id, execution, *rest)
        with self._timer_wake:
            self._timer_wake.notify_all()
        for child in children:
            self.notify(child)
        return True

    def _retry_step(self, e: dict, engine: dict, scheduled: list, work: list) -> None:
        """What DTFx does for a retrying task: a timer after each failure, then a new attempt."""
        if e["EventType"] == ev.TIMER_FIRED:
            chain = engine["retry_timers"].pop(str(e["TimerId"]))
            if chain["attempt"] < chain["retry"]["maxNumberOfAttempts"]:
                chain["attempt"] += 1
                task_id = self._next_id(engine)
                engine["retry_tasks"][str(task_id)] = chain
                self._schedule_call(chain, task_id, scheduled, work)
            return
        chain = engine["retry_tasks"].pop(str(e["TaskScheduledId"]))
        retry = chain["retry"]
        delay_ms = 0
        if chain["attempt"] < retry["maxNumberOfAttempts"]:
            delay_ms = retry["firstRetryIntervalInMilliseconds"] * retry.get("backoffCoefficient", 1) ** (chain["attempt"] - 1)
            if retry.get("maxRetryIntervalInMilliseconds"):
                delay_ms = min(delay_ms, retry["maxRetryIntervalInMilliseconds"])
        timer_id = self._next_id(engine)
        engine["retry_timers"][str(timer_id)] = chain
        fire_at = ev.utcnow() + timedelta(milliseconds=delay_ms)
        scheduled.append(ev.event(ev.TIMER_CREATED, timer_id, FireAt=ev.iso(fire_at)))
        work.append(("timer", timer_id, fire_at))

    @staticmethod
    def _next_id(engine: dict) -> int:
        engine["next_id"] += 1
        return engine["next_id"] - 1

    def _schedule_call(self, call: dict, task_id: int, scheduled: list, work: list) -> None:
        if call["kind"] == "activity":
            scheduled.append(ev.event(ev.TASK_SCHEDULED, task_id, Name=call["name"], Input=call["input"]))
            work.append(("activity", task_id, call["name"], call["input"]))
        else:
            scheduled.append(ev.event(ev.SUB_CREATED, task_id, Name=call["name"], Input=call["input"],
                                      InstanceId=call["instanceId"]))
            work.append(("sub", task_id, call["name"], call["input"], call["instanceId"]))

    def _apply_actions(self, db, inst, engine: dict, state: dict, scheduled: list, work: list,
                       children: list) -> str | None:
        """Turn the SDK's (cumulative) actions into new history and work. Returns an error
        message when the orchestrator asked for something this host does not do."""
        instance_id, execution = inst["id"], inst["execution"]
        taking = [a for a in _flatten(state.get("actions") or []) if a.get("actionType") in ID_TAKING]
        for position, action in enumerate(taking):
            if position < len(engine["ids"]):
                if action["actionType"] == 5 and action.get("isCanceled"):
                    db.execute("DELETE FROM timers WHERE instance_id=? AND execution=? AND timer_id=?",
                               (instance_id, execution, engine["ids"][position]))
                continue
            task_id = self._next_id(engine)
            engine["ids"].append(task_id)
            kind = action["actionType"]
            if kind == 5:
                fire_at = ev.parse_iso(action["fireAt"])
                scheduled.append(ev.event(ev.TIMER_CREATED, task_id, FireAt=ev.iso(fire_at)))
                work.append(("timer", task_id, fire_at))
                continue
            call = {"kind": "activity" if kind in (0, 1) else "sub", "name": action["functionName"],
                    "input": action.get("input"), "attempt": 1,
                    "instanceId": action.get("instanceId") or f"{instance_id}:{task_id}"}
            if kind in (1, 3):
                call["retry"] = action["retryOptions"]
                engine["retry_tasks"][str(task_id)] = call
            self._schedule_call(call, task_id, scheduled, work)
        unsupported = [a for a in _flatten(state.get("actions") or [])
                       if a.get("actionType") not in ID_TAKING | {WAIT_EVENT, CONTINUE_AS_NEW}]
        if unsupported:
            return f"fedfunc host does not support action type {unsupported[0].get('actionType')} (entities / durable HTTP)"
        for kind, *rest in work:
            if kind == "activity":
                task_id, name, input_text = rest
                db.execute("INSERT OR REPLACE INTO activities VALUES (?,?,?,?,?)",
                           (instance_id, execution, task_id, name, input_text))
            elif kind == "timer":
                timer_id, fire_at = rest
                db.execute("INSERT OR REPLACE INTO timers VALUES (?,?,?,?,?)",
                           (instance_id, execution, timer_id, fire_at.timestamp(), ev.iso(fire_at)))
            elif kind == "sub":
                task_id, name, input_text, child_id = rest
                self._create(db, child_id, name, input_text, (instance_id, execution, task_id))
                children.append(child_id)
        return None

    def _continue_as_new(self, db, inst, input_text: str | None) -> None:
        """A new execution under the same id: fresh history; unprocessed raised events carry over."""
        instance_id, execution = inst["id"], inst["execution"] + 1
        for table in ("history", "activities", "timers"):
            db.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        db.execute("DELETE FROM inbox WHERE instance_id=? AND execution IS NOT NULL", (instance_id,))
        db.execute("UPDATE instances SET execution=?, input=?, engine=?, status='Running' WHERE id=?",
                   (execution, input_text, json.dumps(_fresh_engine()), instance_id))
        self._post(db, instance_id, execution, ev.event(ev.EXECUTION_STARTED, Name=inst["name"], Input=input_text,
                                                        Version=None, ParentInstanceId=inst["parent_id"]))

    def _finish(self, db, inst, status: str, output_json: str | None, extra_events: list) -> str | None:
        """End the instance; returns the parent to notify (after commit) when it is a sub-orchestration."""
        instance_id = inst["id"]
        now = ev.iso(ev.utcnow())
        db.execute("UPDATE instances SET status=?, output=?, updated=? WHERE id=?", (status, output_json, now, instance_id))
        for table in ("activities", "timers"):
            db.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM history WHERE instance_id=?", (instance_id,)).fetchone()[0]
        for e in extra_events + [ev.event(ev.EXECUTION_COMPLETED, OrchestrationStatus=status, Result=output_json)]:
            db.execute("INSERT INTO history VALUES (?,?,?)", (instance_id, seq, json.dumps(e)))
            seq += 1
        log.info("instance %s (%s) %s", instance_id, inst["name"], status)
        if inst["parent_id"]:
            if status == "Completed":
                done = ev.event(ev.SUB_COMPLETED, TaskScheduledId=inst["parent_task"], Result=output_json)
            else:
                reason = _loads(output_json)
                done = ev.event(ev.SUB_FAILED, TaskScheduledId=inst["parent_task"],
                                Reason=f"Sub-orchestration '{inst['name']}' ({instance_id}) {status.lower()}: {reason}",
                                Details=None)
            self._post(db, inst["parent_id"], inst["parent_execution"], done)
        return inst["parent_id"]

    @staticmethod
    def _drop(db, seqs: list) -> None:
        if seqs:
            db.execute(f"DELETE FROM inbox WHERE seq IN ({','.join(str(int(s)) for s in seqs)})")

    # ---- activities ----------------------------------------------------------------------------
    def _submit_activity(self, instance_id: str, execution: int, task_id: int, name: str, input_text: str | None) -> None:
        if not self._stopping:
            self._activities.submit(self._run_activity, instance_id, execution, task_id, name, input_text)

    def _run_activity(self, instance_id: str, execution: int, task_id: int, name: str, input_text: str | None) -> None:
        f = self.app.get(name, "activityTrigger")
        try:
            if f is None:
                raise UnknownFunction(f"no activity function named '{name}' in this app")
            with logged("activity", name, instance_id):
                value = ActivityTriggerConverter.decode(meta.Datum(input_text, "json"), trigger_metadata=None)
                result = self.invoker.call_blocking(f, value)
                text = ActivityTriggerConverter.encode(result, expected_type=None).value
            done = ev.event(ev.TASK_COMPLETED, TaskScheduledId=task_id, Result=text)
        except Exception as exc:
            details = "" if isinstance(exc, UnknownFunction) else traceback.format_exc()
            done = ev.event(ev.TASK_FAILED, TaskScheduledId=task_id,
                            Reason=f"Activity function '{name}' failed: {exc}", Details=details)
        if self._stopping:
            return  # not recorded: it re-runs after restart (at-least-once)
        with self.store.tx() as db:
            gone = db.execute("DELETE FROM activities WHERE instance_id=? AND execution=? AND task_id=?",
                              (instance_id, execution, task_id)).rowcount == 0
            if not gone:
                self._post(db, instance_id, execution, done)
        if not gone:
            self.notify(instance_id)

    # ---- durable timers ------------------------------------------------------------------------
    def _timer_loop(self) -> None:
        while not self._stopping:
            now = ev.utcnow().timestamp()
            due = self.store.query("SELECT * FROM timers WHERE fire_at <= ? ORDER BY fire_at", (now,))
            for row in due:
                with self.store.tx() as db:
                    if db.execute("DELETE FROM timers WHERE instance_id=? AND execution=? AND timer_id=?",
                                  (row["instance_id"], row["execution"], row["timer_id"])).rowcount:
                        self._post(db, row["instance_id"], row["execution"],
                                   ev.event(ev.TIMER_FIRED, TimerId=row["timer_id"], FireAt=row["fire_at_iso"]))
                self.notify(row["instance_id"])
            nxt = self.store.one("SELECT MIN(fire_at) AS t FROM timers")
            wait = 1.0 if nxt["t"] is None else max(0.0, min(1.0, nxt["t"] - ev.utcnow().timestamp()))
            with self._timer_wake:
                if not self._stopping:
                    self._timer_wake.wait(wait)


def _loads(text: str | None):
    return None if text is None else json.loads(text)
