"""What the end-to-end tests do to the system besides calling its API: act as a silo's owner, wait for a state."""
from __future__ import annotations

import json
import re

import numpy as np

from fedfunc import layout, weights
from fedfunc.devstack import DevStack
from fedfunc.host.testing import wait_until
from fedfunc.silo.home import SiloCredentials, read_credentials, silo_home, write_credentials
from fedfunc.storage import blob_service

SILOS = ("site-1", "site-2", "site-3")  # the session stack's silos, which tests only read
HYPERPARAMS = {"epochs": 1, "lr": 0.05, "batch_size": 16, "seed": 0}


def run_spec(bundle: str, **overrides) -> dict:
    """A run spec over the session's three silos with the session's bundle (its hash), one round unless
    overridden."""
    return {"bundle": bundle, "silos": list(SILOS), "rounds": 1, "round_deadline_s": 120, **overrides}


class CutOff:
    """``cut_off(silo)``: the silo's compute loses its storage (its home's connection string points at
    ``refused_port``), so its jobs can write nothing — not an update, not ``failed.json``: the round never
    hears from it. Returns the real credentials, which the silo's owner still has; ``restore(silo)``."""

    def __init__(self, stack: DevStack, refused_port: int):
        self.stack, self.port, self.real = stack, refused_port, {}

    def __call__(self, silo: str) -> SiloCredentials:
        home = silo_home(self.stack.home, silo)
        self.real[silo] = creds = read_credentials(home)
        endpoint = re.search(r"BlobEndpoint=([^;]+)", creds.connection_string).group(1)
        unreachable = creds.connection_string.replace(endpoint, f"http://127.0.0.1:{self.port}/{creds.account}")
        write_credentials(home, creds.model_copy(update={"connection_string": unreachable}))
        return creds

    def restore(self, silo: str) -> None:
        write_credentials(silo_home(self.stack.home, silo), self.real.pop(silo))


def own_outbox(creds: SiloCredentials):
    """The silo's outbox as its owner reaches it, with its own key."""
    return blob_service(creds.connection_string).get_container_client(layout.OUTBOX)


def forge_nan_update(stack: DevStack, run: str, silo: str, creds: SiloCredentials) -> None:
    """Publish, with the silo's own key, an update for round 0 of ``run`` that is well formed, carries the
    round's nonce and claims the history the signed bundle requires, but holds NaN weights (plus its
    metrics), as a compromised silo could."""
    from fedfunc.pipeline import required_steps, silo_side
    from fedfunc.pipeline.history import HISTORY_KEY, PAYLOAD_KEY

    model = weights.decode(stack.download(layout.MODELS, layout.global_model(run, 0)))[0]
    nonce = json.loads(stack.download(layout.RUNS, layout.round_manifest(run, 0)))["nonce"]
    side = silo_side(json.loads(stack.download(layout.RUNS, layout.run_bundle_manifest(run)))["config"])
    claimed = json.dumps([s.wire() for s in required_steps(side)], sort_keys=True, separators=(",", ":"))
    poisoned = weights.encode({k: np.full_like(v, np.nan) for k, v in model.items()},
                              {"run": run, "round": "0", "silo": silo, "nonce": nonce, "num_samples": "200",
                               PAYLOAD_KEY: "weights", HISTORY_KEY: claimed})
    prefix = layout.outbox_prefix(run, 0, silo)
    outbox = own_outbox(creds)
    outbox.upload_blob(prefix + layout.METRICS, json.dumps({"loss": 0.1, "num_samples": 200}).encode())
    outbox.upload_blob(prefix + layout.UPDATE, poisoned)


def instance_status(stack: DevStack, instance: str) -> dict:
    """An orchestration instance's status from Durable's management API (``historyEvents`` included)."""
    return stack.api("GET", f"/runtime/webhooks/durabletask/instances/{instance}?showHistory=true", role=None)


def wait_instance(stack: DevStack, instance: str, runtime_status: str, timeout: float = 60) -> dict:
    """``instance``'s status once it is ``runtime_status`` (a termination, for one, is queued, not immediate)."""
    def reached() -> dict | None:
        status = instance_status(stack, instance)
        return status if status["runtimeStatus"] == runtime_status else None
    return wait_until(reached, timeout, interval=0.1, what=f"instance {instance} {runtime_status}")
