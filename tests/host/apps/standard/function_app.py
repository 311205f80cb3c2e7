# A Durable Functions app in the shape of Microsoft's documented Python v2 samples
# (function chaining, fan-out/fan-in, human interaction, monitor), using only the public SDK.
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

myApp = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


# An HTTP-triggered function with a Durable Functions client binding
@myApp.route(route="orchestrators/{functionName}")
@myApp.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client):
    function_name = req.route_params.get("functionName")
    payload = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(function_name, None, payload)
    response = client.create_check_status_response(req, instance_id)
    return response


# Function chaining
@myApp.orchestration_trigger(context_name="context")
def hello_orchestrator(context):
    result1 = yield context.call_activity("hello", "Seattle")
    result2 = yield context.call_activity("hello", "Tokyo")
    result3 = yield context.call_activity("hello", "London")
    return [result1, result2, result3]


@myApp.activity_trigger(input_name="city")
def hello(city: str):
    return f"Hello {city}"


# Fan-out/fan-in
@myApp.orchestration_trigger(context_name="context")
def fan_out_fan_in(context):
    work_batch = yield context.call_activity("get_work_batch", context.get_input() or 5)
    parallel_tasks = [context.call_activity("process_item", b) for b in work_batch]
    outputs = yield context.task_all(parallel_tasks)
    total = yield context.call_activity("sum_results", outputs)
    return total


@myApp.activity_trigger(input_name="count")
def get_work_batch(count: int):
    return list(range(1, count + 1))


@myApp.activity_trigger(input_name="item")
def process_item(item: int):
    return item * item


@myApp.activity_trigger(input_name="values")
def sum_results(values: list):
    return sum(values)


# Human interaction: an approval event races a timeout
@myApp.orchestration_trigger(context_name="context")
def approval_workflow(context):
    timeout_seconds = (context.get_input() or {}).get("timeout_seconds", 60)
    yield context.call_activity("request_approval", context.instance_id)
    due_time = context.current_utc_datetime + timedelta(seconds=timeout_seconds)
    durable_timeout_task = context.create_timer(due_time)
    approval_event_task = context.wait_for_external_event("ApprovalEvent")
    winning_task = yield context.task_any([approval_event_task, durable_timeout_task])
    if approval_event_task == winning_task:
        durable_timeout_task.cancel()
        result = yield context.call_activity("process_approval", approval_event_task.result)
        return result
    return "Escalated"


@myApp.activity_trigger(input_name="instanceId")
def request_approval(instanceId: str):
    return f"approval requested for {instanceId}"


@myApp.activity_trigger(input_name="approval")
def process_approval(approval):
    return f"Approved: {approval}"


# Monitor / eternal orchestration: polls with continue_as_new, runs a sub-orchestration each cycle
@myApp.orchestration_trigger(context_name="context")
def monitor(context):
    state = context.get_input() or {"cycle": 0, "cycles": 3, "interval_seconds": 1, "results": []}
    check = yield context.call_sub_orchestrator("check_status", state["cycle"])
    state["results"].append(check)
    state["cycle"] += 1
    context.set_custom_status({"cycle": state["cycle"]})
    if state["cycle"] >= state["cycles"]:
        return state["results"]
    next_check = context.current_utc_datetime + timedelta(seconds=state["interval_seconds"])
    yield context.create_timer(next_check)
    context.continue_as_new(state)


@myApp.orchestration_trigger(context_name="context")
def check_status(context):
    value = yield context.call_activity("hello", f"cycle {context.get_input()}")
    return value


# Error handling: automatic retry on failure
ATTEMPTS = {}


@myApp.orchestration_trigger(context_name="context")
def retry_orchestrator(context):
    first_retry_interval_in_milliseconds = 100
    max_number_of_attempts = 3
    retry_options = df.RetryOptions(first_retry_interval_in_milliseconds, max_number_of_attempts)
    result = yield context.call_activity_with_retry("flaky_activity", retry_options, context.instance_id)
    return result


@myApp.activity_trigger(input_name="key")
def flaky_activity(key: str):
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise Exception(f"transient failure {ATTEMPTS[key]}")
    return f"succeeded after {ATTEMPTS[key]} attempts"
