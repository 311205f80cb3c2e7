# The host's own test app: one function per host feature. Side effects go to files under
# $FEATURES_OUT so tests (in another process) can see what ran and how often.
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
OUT = Path(os.environ.get("FEATURES_OUT", "."))


def record(kind: str, value) -> None:
    with open(OUT / f"{kind}.jsonl", "a") as f:
        f.write(json.dumps(value) + "\n")


def count(kind: str) -> int:
    path = OUT / f"{kind}.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ---- HTTP ---------------------------------------------------------------------------------
@app.route(route="echo/{name}/{n:int?}", methods=["GET", "POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({
        "method": req.method, "route": dict(req.route_params), "query": dict(req.params),
        "header": req.headers.get("x-test"), "body": req.get_body().decode()}),
        status_code=201, mimetype="application/json", headers={"x-reply": "yes"})


@app.route(route="secure", auth_level=func.AuthLevel.FUNCTION)
def secure(req: func.HttpRequest) -> str:
    return "function ok"


@app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> str:
    return "admin ok"


@app.route(route="crash")
def crash(req: func.HttpRequest) -> str:
    raise RuntimeError("http handler exploded")


@app.route(route="disabled")
def disabled_fn(req: func.HttpRequest) -> str:
    return "should not run"


@app.route(route="start/{name}/{id?}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    payload = req.get_json() if req.get_body() else None
    try:
        instance_id = await client.start_new(req.route_params["name"], req.route_params.get("id"), payload)
    except Exception as exc:
        return func.HttpResponse(json.dumps({"error": str(exc)}), status_code=400)
    return client.create_check_status_response(req, instance_id)


@app.route(route="client/{op}/{id?}", methods=["POST", "GET"])
@app.durable_client_input(client_name="client")
async def client_ops(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    """Every DurableOrchestrationClient call the host must serve, driven by the SDK itself."""
    op, instance_id = req.route_params["op"], req.route_params.get("id")
    if op == "status":
        s = await client.get_status(instance_id, show_history=True, show_input=True)
        out = {"status": s.runtime_status.value if s.runtime_status else None, "output": s.output,
               "input": s.input_, "custom": s.custom_status, "history": len(s.historyEvents or [])
               if hasattr(s, "historyEvents") else None, "message": getattr(s, "message", None)}
    elif op == "raise":
        await client.raise_event(instance_id, req.params["event"], req.get_json())
        out = {"raised": True}
    elif op == "terminate":
        await client.terminate(instance_id, "stopped by test")
        out = {"terminated": True}
    elif op == "purge":
        out = {"deleted": (await client.purge_instance_history(instance_id)).instances_deleted}
    elif op == "list":
        out = sorted(s.instance_id for s in await client.get_status_all())
    elif op == "list_by":
        statuses = [df.OrchestrationRuntimeStatus(s) for s in req.params["status"].split(",")]
        found = await client.get_status_by(runtime_status=statuses, instance_id_prefix=req.params.get("prefix"))
        out = sorted(s.instance_id for s in found)
    else:
        return func.HttpResponse(f"unknown op {op}", status_code=400)
    return func.HttpResponse(json.dumps(out), mimetype="application/json")


# ---- orchestrations ------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    """`flaky` fails twice then succeeds; `always_fails` exhausts its attempts."""
    key = context.get_input()
    ok = yield context.call_activity_with_retry("flaky", df.RetryOptions(50, 3), {"key": key, "fail_times": 2})
    try:
        yield context.call_activity_with_retry("flaky", df.RetryOptions(50, 2), {"key": key + "-x", "fail_times": 9})
        exhausted = "no error?"
    except Exception as exc:
        exhausted = str(exc).split("\n")[0].strip()
    parallel = yield context.task_all([
        context.call_activity_with_retry("flaky", df.RetryOptions(30, 4), {"key": f"{key}-p{i}", "fail_times": i})
        for i in range(3)])
    # Side by side, each awaited as it ends (as a round aggregates and pools): task_any hands over a task
    # that failed, whose failure is raised where it is yielded again.
    good = context.call_activity_with_retry("flaky", df.RetryOptions(30, 2), {"key": f"{key}-good", "fail_times": 1})
    bad = context.call_activity_with_retry("flaky", df.RetryOptions(30, 2), {"key": f"{key}-bad", "fail_times": 9})
    pending = [good, bad]
    while pending:
        finished = yield context.task_any(pending)
        pending.remove(finished)
    raced = {"good": (yield good)}
    try:
        yield bad
    except Exception as exc:
        raced["bad"] = str(exc).split("\n")[0].strip()
    return {"ok": ok, "exhausted": exhausted, "parallel": parallel, "raced": raced}


@app.activity_trigger(input_name="spec")
def flaky(spec: dict) -> int:
    kind = f"flaky-{spec['key']}"
    record(kind, time.time())
    attempts = count(kind)
    if attempts <= spec["fail_times"]:
        raise RuntimeError(f"flaky attempt {attempts} fails")
    return attempts


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    """Sub-orchestrations with explicit ids, each counting down with continue_as_new."""
    n = context.get_input()
    children = [context.call_sub_orchestrator("countdown", {"left": i + 1, "seen": []}, f"{context.instance_id}-c{i}")
                for i in range(n)]
    results = yield context.task_all(children)
    try:
        yield context.call_sub_orchestrator("explode", None, f"{context.instance_id}-bad")
        failure = None
    except Exception as exc:
        failure = str(exc).split("\n")[0].strip()
    return {"children": results, "failure": failure}


@app.orchestration_trigger(context_name="context")
def countdown(context: df.DurableOrchestrationContext):
    state = context.get_input()
    if state["left"] == 0:
        return state["seen"]
    value = yield context.call_activity("double", state["left"])
    context.continue_as_new({"left": state["left"] - 1, "seen": state["seen"] + [value]})


@app.activity_trigger(input_name="x")
def double(x: int) -> int:
    return 2 * x


@app.orchestration_trigger(context_name="context")
def explode(context: df.DurableOrchestrationContext):
    yield context.call_activity("double", 1)
    raise ValueError("kaboom in orchestrator")


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    """Waits for `go` (or a timer, if the input gives seconds); custom status shows progress."""
    context.set_custom_status({"stage": "waiting"})
    timeout = context.get_input()
    waits = [context.wait_for_external_event("go")]
    if timeout:
        waits.append(context.create_timer(context.current_utc_datetime + timedelta(seconds=timeout)))
    winner = yield context.task_any(waits)
    context.set_custom_status({"stage": "done"})
    if winner == waits[0]:
        if len(waits) > 1:
            waits[1].cancel()
        return {"event": winner.result}
    return {"timer": True}


@app.orchestration_trigger(context_name="context")
def slow(context: df.DurableOrchestrationContext):
    result = yield context.call_activity("sleepy", context.get_input())
    return result


@app.activity_trigger(input_name="seconds")
def sleepy(seconds: float) -> str:
    record("sleepy-start", time.time())
    time.sleep(seconds)
    return f"slept {seconds}"


@app.orchestration_trigger(context_name="context")
def missing_activity(context: df.DurableOrchestrationContext):
    yield context.call_activity("no_such_activity", 1)


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("double", 2)
    raise ValueError("orchestrator says no")


@app.orchestration_trigger(context_name="context")
def two_events(context: df.DurableOrchestrationContext):
    """Events raised before anyone waits are buffered; both arrive in order."""
    a = yield context.wait_for_external_event("a")
    b = yield context.wait_for_external_event("b")
    return [a, b]


# ---- timer, Event Grid and blob triggers ------------------------------------------------------
@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    record("tick", {"past_due": timer.past_due, "at": time.time()})


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    data = event.get_json()
    last = event.subject.rsplit("/", 1)[-1]
    if last.startswith("fail-once") and count(f"failed-{last}") == 0:
        record(f"failed-{last}", event.id)
        raise RuntimeError(f"first delivery of {last} fails")
    record("on_event", {"id": event.id, "subject": event.subject, "type": event.event_type,
                        "topic": event.topic, "data": data})


@app.event_grid_trigger(arg_name="event")
def on_cloud_event(event) -> None:
    """Events from a local custom topic (CloudEvents decode to func.CloudEvent)."""
    if hasattr(event, "specversion"):
        record("on_cloud_event", {"id": event.id, "type": event.type, "source": event.source,
                                  "subject": event.subject, "data": event.get_json()})
    else:
        record("on_cloud_event", {"id": event.id, "type": event.event_type, "topic": event.topic,
                                  "subject": event.subject, "data": event.get_json()})


@app.blob_trigger(arg_name="blob", path="uploads/{name}", connection="UPLOADS_CONN", source="EventGrid")
def on_upload(blob: func.InputStream) -> None:
    record("on_upload", {"name": blob.name, "content": blob.read().decode()})


@app.route(route="subscribe/{name}", methods=["POST"])
def subscribe(req: func.HttpRequest) -> func.HttpResponse:
    """App code creating a local Event Grid subscription in-process (as silo onboarding does)."""
    from fedfunc.host.subscriptions import put_subscription
    spec = req.get_json()
    return func.HttpResponse(json.dumps(put_subscription(req.route_params["name"], **spec)), mimetype="application/json")


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def raise_from_event(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """The FL app's pattern: an Event Grid event becomes a raise_event on an orchestration."""
    data = event.get_json()
    await client.raise_event(data["instance"], "go", {"subject": event.subject})


@app.route(route="typed")
def typed(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("<p>hi</p>", headers={"content-type": "text/html"})
