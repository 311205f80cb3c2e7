"""The CLI under hostile input: every command ends an error with one line and a non-zero exit code, never
a traceback, and prints text from another party (an API's answer, a silo's failure reason) literally."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import json_values, mutated

HOSTILE = "[/] [bold red]x[/bold red] [link=file:///etc/passwd]y \x1b[2J\x07 ] [ \\[ {}"


class FakeApi:
    """A Function App stand-in answering every route with ``status`` and ``body`` (JSON or raw bytes)."""

    def __init__(self):
        self.status, self.body = 200, {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                raw = api.body if isinstance(api.body, bytes) else json.dumps(api.body).encode()
                self.send_response(api.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def api():
    fake = FakeApi()
    yield fake
    fake.server.shutdown()


def clean(result, *, ok: bool | None = None) -> None:
    """No traceback and no escaped exception; an error is one ``Error:`` line and a non-zero exit."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.output
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output


RUN = {"run": "r1", "runtime_status": "Failed", "phase": "failed", "round": 0, "rounds": 2, "error": HOSTILE,
       "history": [{"round": 0, "metrics": {"accuracy": 0.5, "loss": 1.0}, "num_samples": 10,
                    "silos": {"site-1": {"state": "failed", "reason": HOSTILE},
                              "site-2": {"state": "received", "num_samples": 5,
                                         "capped": {"reported": 9, "used": 5, "by": "x"}}}}],
       "current_round": {"round": 1, "phase": "collecting", "received": [], "missing": ["site-2"],
                         "failed": {"site-1": HOSTILE}, "rejected": {"site-3": HOSTILE}}}


def test_run_status_prints_a_silos_failure_reason_literally(fedfunc, api):
    api.status, api.body = 200, RUN
    result = fedfunc("run", "status", "r1", "--host", api.url, "--api-key", "k")
    clean(result, ok=True)
    assert "[/] [bold red]x[/bold red]" in result.output and "\x1b" not in result.output
    assert result.output.count("site-1 failed: [/]") == 2  # round 0's outcome and the current round's


def test_an_api_error_with_markup_is_one_literal_line(fedfunc, api):
    api.status, api.body = 400, {"error": HOSTILE + "\nsecond line", "rule": "[x]"}
    result = fedfunc("run", "status", "r1", "--host", api.url, "--api-key", "k")
    clean(result, ok=False)
    assert "[bold red]x[/bold red]" in result.output and "second line" in result.output


COMMANDS = [
    lambda a, url, f: ["run", "status", a, "--host", url, "--api-key", "k"],
    lambda a, url, f: ["run", "list", "--host", url, "--api-key", "k"],
    lambda a, url, f: ["run", "cancel", a, "--host", url, "--api-key", "k"],
    lambda a, url, f: ["run", "open", a, "--host", url, "--api-key", "k"],
    lambda a, url, f: ["run", "start", f, "--host", url, "--api-key", "k"],
    lambda a, url, f: ["silo", "list", "--host", url, "--api-key", "k"],
    lambda a, url, f: ["silo", "disable", a, "--host", url, "--api-key", "k"],
    lambda a, url, f: ["silo", "remove", a, "--host", url, "--api-key", "k"],
    lambda a, url, f: ["silo", "add", a, "--trust-signer", a, "--no-wait", "--host", url, "--api-key", "k"],
    lambda a, url, f: ["silo", "policy", a, "--local-home", f + ".home"],
    lambda a, url, f: ["silo", "upload", a, "--task", a, "--builtin-part", a, "--local-home", f + ".home"],
    lambda a, url, f: ["silo", "upload", "site-1", "--task", "digits", "--file", f, "--local-home", f + ".home"],
    lambda a, url, f: ["silo-job", "--request", f],
    lambda a, url, f: ["sign", "--task", a, "--key", f, "--out", f + ".out"],
    lambda a, url, f: ["audit", "--since", a],
]


@settings(max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(COMMANDS), arg=st.text(max_size=30) | st.sampled_from(["site-1", "r1", "1/2", "0/0"]),
       answer=st.tuples(st.sampled_from([200, 202, 400, 404, 500]), json_values | mutated(RUN) | st.binary(max_size=40)),
       content=json_values.map(json.dumps).map(str.encode) | st.binary(max_size=100))
def test_no_command_prints_a_traceback(fedfunc, api, tmp_path_factory, command, arg, answer, content):
    api.status, api.body = answer
    file = tmp_path_factory.mktemp("cli") / "input.json"
    file.write_bytes(content)
    env = {"FEDFUNC_STORAGE": "DefaultEndpointsProtocol=http;AccountName=x;AccountKey=eA==;"
                              "BlobEndpoint=http://127.0.0.1:9/x;TableEndpoint=http://127.0.0.1:9/x;"}
    clean(fedfunc(*command(arg, api.url, str(file)), env=env))
