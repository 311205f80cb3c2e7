"""The whole system on one machine: Azurite, the Function App on ``fedfunc host``, keys, local silos.

Used by ``fedfunc demo``, the end-to-end tests and the benches. Everything goes through the same
surfaces a deployment has: the app's HTTP API (runs, silos), the silo owner's own storage key
(data uploads), and a scientist's signing key (task bundles, uploaded through the API).
"""
from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from fedfunc.azurite import REPO_ROOT, SILO_POOL_SIZE, Azurite
from fedfunc.host.eventgrid import WEBHOOK
from fedfunc.host.topics import topic_endpoint
from fedfunc.host.keys import FUNCTION_KEY_SETTING, MASTER_KEY_SETTING, HostKeys
from fedfunc.host.testing import TERMINAL, HostProcess
from fedfunc.security import keys
from fedfunc.silo.home import silo_home
from fedfunc.silo.local import upload_silo_data

# Tasks a dev stack's silos allow by default: the built-ins and the examples in examples/.
DEFAULT_TASKS = ("digits", "breast_cancer", "tabular", "images")


EVENTS_TOPIC = "fedfunc-events"


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


class DevStack:
    def __init__(self, root: Path, port: int | None = None, extra_settings: dict | None = None,
                 mlflow_store: Path | None = None, pool_size: int = SILO_POOL_SIZE):
        """``mlflow_store``: the MLflow SQLite file runs are tracked in (default ``root/mlflow/mlflow.db``);
        ``pool_size``: Azurite accounts for silos (one each), fixed when the stack is first created."""
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.azurite = Azurite(self.root / "azurite", pool_size=max(pool_size, SILO_POOL_SIZE))
        self.home = self.root / "home"
        self.mlflow_store = Path(mlflow_store or self.root / "mlflow" / "mlflow.db").resolve()
        self.admin_key, self.scientist_key = self._api_keys()
        self.orchestrator_key_path = self._key("orchestrator")
        self.scientist_signing_key = keys.load_private(self._key("scientist"))
        self._extra_settings = dict(extra_settings or {})
        self.host = HostProcess(REPO_ROOT, state=self.root / "host" / "state.sqlite", port=port,
                                args=("--storage-log", str(self.azurite.log_path)))
        # the host's keys (master, host, system keys), made here and kept with the host's state
        self.host_keys = HostKeys.load(self.host.keys_path, environ={})
        for setting in (MASTER_KEY_SETTING, FUNCTION_KEY_SETTING):  # the keys file, not the caller's shell
            self.host.env.pop(setting, None)

    def _api_keys(self) -> tuple[str, str]:
        path = self.root / "api-keys.json"
        k = json.loads(path.read_text()) if path.exists() else {}
        if not {"admin", "scientist", "links"} <= set(k):   # new, or from before signed links
            k = {"admin": secrets.token_urlsafe(24), "scientist": secrets.token_urlsafe(24),
                 "links": secrets.token_urlsafe(32), **k}
            path.write_text(json.dumps(k))
            path.chmod(0o600)
        self.link_key = k["links"]
        return k["admin"], k["scientist"]

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_store}"

    def mlflow_ui_command(self) -> str:
        """How to look at this stack's MLflow runs."""
        return f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {self.mlflow_uri} --port 5000"

    def _init_mlflow(self) -> None:
        """Create the MLflow store (its schema migrations take seconds) before the app's first tracking call."""
        from mlflow.tracking import MlflowClient

        self.mlflow_store.parent.mkdir(parents=True, exist_ok=True)
        MlflowClient(tracking_uri=self.mlflow_uri).search_experiments(max_results=1)

    def _key(self, who: str) -> Path:
        stem = self.root / "keys" / who
        if not stem.with_suffix(".pem").exists():
            stem.parent.mkdir(parents=True, exist_ok=True)
            keys.save_keypair(keys.generate(), stem)
        return stem.with_suffix(".pem")

    def settings(self) -> dict[str, str]:
        """The Function App's settings for this stack (what local.settings.json would hold)."""
        return {
            "FEDFUNC_STORAGE": self.azurite.orchestrator.connection_string,
            "FEDFUNC_JOB_BACKEND": "local",
            "FEDFUNC_LOCAL_HOME": str(self.home),
            "FEDFUNC_AZURITE_HOME": str(self.azurite.location),
            "FEDFUNC_API_KEYS": json.dumps({self.admin_key: "admin", self.scientist_key: "scientist"}),
            "FEDFUNC_ORCHESTRATOR_KEY": str(self.orchestrator_key_path),
            "FEDFUNC_RETRAIN_SCHEDULE": "0 0 3 * * *",
            "AzureWebJobs.scheduled_retraining.Disabled": "true",
            "FEDFUNC_MLFLOW_TRACKING_URI": self.mlflow_uri,
            "FEDFUNC_LINK_KEY": self.link_key,
            # domain events go to the host's own custom topic (a path: on the host the app runs on)
            "FEDFUNC_EVENTS_ENDPOINT": topic_endpoint("", EVENTS_TOPIC),
            "FEDFUNC_EVENTS_KEY": self.host_keys.topic_key(EVENTS_TOPIC),
        }

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "DevStack":
        self._init_mlflow()
        self.azurite.start()  # its ports are known from here on
        self.host.env.update({**self.settings(), **self._extra_settings})
        try:
            self.host.start(timeout=60)
        except Exception:
            self.azurite.stop()
            raise
        return self

    def stop(self) -> None:
        from fedfunc.backends.local import LocalProcessBackend

        self.host.stop()
        LocalProcessBackend(self.home).stop_pool()  # the silos' warm worker pool, if one runs
        self.azurite.stop()

    def __enter__(self) -> "DevStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the HTTP API ----------------------------------------------------------------------------
    @property
    def master_key(self) -> str:
        """The host's master key: opens the Durable management, Event Grid and admin routes."""
        return self.host_keys.master

    def api(self, method: str, path: str, body: object | None = None, *, role: str = "scientist",
            expect: tuple[int, ...] = (200, 201, 202)) -> dict:
        """Call the app's API as ``role`` (``x-api-key``); the host's own routes get the master key."""
        key = {"admin": self.admin_key, "scientist": self.scientist_key}.get(role)
        headers = {"x-api-key": key} if key else {}
        if path.startswith(("/runtime/", "/admin/")):
            headers["x-functions-key"] = self.master_key
        r = requests.request(method, self.host.url(path), json=body, headers=headers, timeout=60)
        if r.status_code not in expect:
            raise ApiError(r.status_code, r.text)
        return r.json() if r.content else {}

    def subscribe_events(self, name: str, webhook: str, **filters) -> dict:
        """Deliver the app's domain events (its topic) to ``webhook``, at least once, from now on."""
        return self.api("PUT", f"{WEBHOOK}/subscriptions/{name}", {"topic": EVENTS_TOPIC, "webhook": webhook, **filters},
                        role=None)

    def topic(self, name: str) -> dict:
        """A local Event Grid custom topic on the host: ``{name, endpoint, key}`` (created if new)."""
        return self.api("PUT", f"/admin/eventgrid/topics/{name}", role=None)

    # --- silos -----------------------------------------------------------------------------------
    def silo_policy(self, tasks: tuple[str, ...] = DEFAULT_TASKS, **extra) -> dict:
        """The silo owner's first policy: trust this stack's scientist key for code, allow ``tasks``."""
        return {"trusted_signers": [keys.public_b64(self.scientist_signing_key.public_key())],
                "allowed_tasks": list(tasks), **extra}

    def add_silo(self, name: str, *, policy: dict | None = None, max_samples: int | None = None,
                 timeout: float = 60) -> dict:
        """Onboard through the admin API and wait until the silo is ready (or onboarding failed)."""
        return self.add_silos([name], policy=policy, max_samples=max_samples, timeout=timeout)[name]

    def add_silos(self, names: list[str], *, policy: dict | None = None, max_samples: int | None = None,
                  timeout: float | None = None) -> dict:
        """Onboard several silos at once (the onboardings run side by side) and wait until all are ready."""
        for name in names:
            self.api("POST", "/api/silos", {"name": name, "compute": "local", "max_samples": max_samples,
                                            "policy": policy or self.silo_policy()}, role="admin")
        deadline = time.monotonic() + (timeout or 60 + 2 * len(names))
        done: dict[str, dict] = {}
        while time.monotonic() < deadline:
            for name in [n for n in names if n not in done]:
                status = self.api("GET", f"/api/silos/{name}/onboarding", role="admin")
                if status["runtime_status"] not in TERMINAL:
                    break
                if status["runtime_status"] != "Completed":
                    raise RuntimeError(f"onboarding {name} {status['runtime_status']}: {status.get('error')}")
                done[name] = status
            if len(done) == len(names):
                return done
            time.sleep(0.2)
        raise TimeoutError(f"onboarding {sorted(set(names) - set(done))} did not finish in time")

    def add_silos_with_data(self, silos: list[str], task: str = "digits", *, alpha: float | None = None,
                            seed: int = 0) -> None:
        """Onboard ``silos`` and give each its share of a built-in ``task``'s data (train and test parts; IID,
        or Dirichlet ``alpha``)."""
        from fedfunc.tasks.builtin.datasets import silo_parts

        for silo, part in zip(silos, silo_parts(task, len(silos), alpha=alpha, seed=seed)):
            self.add_silo(silo)
            self.upload_data(silo, part.files(task))

    def upload_data(self, silo: str, files: Mapping[str, bytes]) -> list[str]:
        """What the silo owner does: upload its own data (``{task}/{part}/...`` paths) with its own key."""
        return upload_silo_data(silo_home(self.home, silo), files)

    def download(self, container: str, path: str) -> bytes:
        """Read from the orchestrator's storage (reports, models)."""
        from fedfunc.storage import blob_service
        return blob_service(self.azurite.orchestrator.connection_string).get_blob_client(
            container, path).download_blob().readall()

    # --- runs ------------------------------------------------------------------------------------
    def sign(self, task: str | Path, hyperparams: Mapping | None = None, **silo_side) -> bytes:
        """What the scientist does: sign a task folder (or a built-in task by name) with this stack's key;
        ``silo_side``: ``proximal_mu``, ``transforms``, ``clip_norm`` (``fedfunc.tasks.signing.build_bundle``)."""
        from fedfunc.tasks.builtin import task_dir
        from fedfunc.tasks.signing import build_bundle

        folder = Path(task) if isinstance(task, Path) else task_dir(task)
        return build_bundle(folder, self.scientist_signing_key, hyperparams, **silo_side)

    def upload_bundle(self, data: bytes, expect: tuple[int, ...] = (200, 201)) -> dict:
        r = requests.post(self.host.url("/api/bundles"), data=data, timeout=60,
                          headers={"x-api-key": self.scientist_key, "content-type": "application/octet-stream"})
        if r.status_code not in expect:
            raise ApiError(r.status_code, r.text)
        return r.json()

    def bundle(self, task: str | Path, hyperparams: Mapping | None = None, **silo_side) -> str:
        """Sign and upload; the bundle hash a run spec names."""
        return self.upload_bundle(self.sign(task, hyperparams, **silo_side))["bundle"]

    def start_run(self, spec: dict) -> str:
        return self.api("POST", "/api/runs", spec)["run"]

    def run_status(self, run_id: str) -> dict:
        return self.api("GET", f"/api/runs/{run_id}")

    def run_page_link(self, run_id: str, ttl_s: int = 3600) -> str:
        """A signed, expiring link to the run's page (what ``fedfunc run open`` prints)."""
        return self.api("POST", f"/api/runs/{run_id}/link", {"ttl_s": ttl_s})["url"]

    def wait_round(self, run_id: str, round_: int, phase: str = "collecting", timeout: float = 120) -> dict:
        """The run's status once round ``round_`` is in ``phase`` (e.g. waiting for silo updates)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            current = status.get("current_round") or {}
            if current.get("round") == round_ and current.get("phase") == phase:
                return status
            if status["runtime_status"] in TERMINAL:
                raise RuntimeError(f"run {run_id} ended before round {round_} was {phase}: {status}")
            time.sleep(0.1)
        raise TimeoutError(f"round {round_} of {run_id} not {phase} within {timeout:.0f}s")

    def wait_run(self, run_id: str, timeout: float = 600, on_status=None, interval: float = 0.3) -> dict:
        """The run's detail once it has ended. Only with ``on_status`` is the detail read while it runs:
        otherwise the wait reads the run's Durable status (one row), because the detail (rounds, the round
        in progress, a row per silo) takes the host tens of ms a call, taken from the run it waits for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if on_status:
                status = self.run_status(run_id)
                on_status(status)
                ended = status["runtime_status"] in TERMINAL
            else:
                ended = self.api("GET", f"/runtime/webhooks/durabletask/instances/{run_id}?showInput=false",
                                 role=None)["runtimeStatus"] in TERMINAL
            if ended:
                return status if on_status else self.run_status(run_id)
            time.sleep(interval)
        raise TimeoutError(f"run {run_id} not finished within {timeout:.0f}s")
