"""A Durable Functions app in the shape of Microsoft's documented samples, driven only through
standard HTTP surfaces: its own starter route and the check-status URLs from the 202."""
from __future__ import annotations

import pytest
import requests
from host_helpers import APPS

from fedfunc.host.testing import HostProcess, wait_for_instance


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with HostProcess(APPS / "standard", tmp_path_factory.mktemp("standard") / "state.sqlite") as process:
        yield process


def start(host, name: str, payload=None) -> dict:
    r = requests.post(host.url(f"/api/orchestrators/{name}"), json=payload)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == r.json()["statusQueryGetUri"]
    return r.json()


def done(urls: dict, timeout: float = 20) -> dict:
    return wait_for_instance(urls["statusQueryGetUri"], timeout=timeout)


def test_function_chaining(host):
    status = done(start(host, "hello_orchestrator"))
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == ["Hello Seattle", "Hello Tokyo", "Hello London"]


def test_fan_out_fan_in(host):
    status = done(start(host, "fan_out_fan_in", 20))
    assert status["output"] == sum(i * i for i in range(1, 21))


def test_approval_event_beats_the_timer(host):
    urls = start(host, "approval_workflow", {"timeout_seconds": 30})
    wait_for_instance(urls["statusQueryGetUri"], statuses=("Running",))
    r = requests.post(urls["sendEventPostUri"].replace("{eventName}", "ApprovalEvent"), json={"by": "ann"})
    assert r.status_code == 202
    assert done(urls)["output"] == "Approved: {'by': 'ann'}"


def test_timer_beats_the_approval(host):
    status = done(start(host, "approval_workflow", {"timeout_seconds": 0.3}))
    assert status["output"] == "Escalated"


def test_monitor_with_sub_orchestrations_and_continue_as_new(host):
    urls = start(host, "monitor", {"cycle": 0, "cycles": 3, "interval_seconds": 0.2, "results": []})
    status = done(urls)
    assert status["output"] == ["Hello cycle 0", "Hello cycle 1", "Hello cycle 2"]
    assert status["customStatus"] == {"cycle": 3}


def test_retries(host):
    assert done(start(host, "retry_orchestrator"))["output"] == "succeeded after 3 attempts"


def test_unknown_orchestrator_name(host):
    r = requests.post(host.url("/api/orchestrators/no_such_orchestrator"))
    assert r.status_code == 500 and "no_such_orchestrator" in r.text
    assert done(start(host, "hello_orchestrator"))["runtimeStatus"] == "Completed"  # still serving


def test_kill_9_in_the_middle_of_a_wait(host):
    urls = start(host, "approval_workflow", {"timeout_seconds": 60})
    wait_for_instance(urls["statusQueryGetUri"], statuses=("Running",))
    host.kill()
    host.start()
    assert requests.get(urls["statusQueryGetUri"]).json()["runtimeStatus"] == "Running"
    requests.post(urls["sendEventPostUri"].replace("{eventName}", "ApprovalEvent"), json="yes").raise_for_status()
    assert done(urls)["output"] == "Approved: yes"
