"""Where things live in storage: one place for every blob path, so producers and consumers agree."""
from __future__ import annotations

import re

MODELS = "models"        # orchestrator: global models (silos may read)
RUNS = "runs"            # orchestrator: specs, manifests, aggregation records, reports
EVALDATA = "evaldata"    # orchestrator: held-out evaluation sets
DATA = "data"            # silo: training data, never leaves the silo
OUTBOX = "outbox"        # silo: updates and metrics (orchestrator may read)

UPDATE = "update.safetensors"
METRICS = "metrics.json"
FAILED = "failed.json"


def global_model(run: str, round_: int) -> str:
    """The global model entering ``round_`` (round 0 is the initial model), in ``models``."""
    return f"{run}/round-{round_:04d}/global.safetensors"


def run_spec(run: str) -> str:
    return f"{run}/spec.json"


def round_dir(run: str, round_: int) -> str:
    return f"{run}/rounds/{round_:04d}"


def round_manifest(run: str, round_: int) -> str:
    return f"{round_dir(run, round_)}/manifest.json"


def aggregate_record(run: str, round_: int) -> str:
    return f"{round_dir(run, round_)}/aggregate.json"


def round_results(run: str) -> str:
    """Every completed round's result (``RoundResult``s), kept by ``observe`` for the API, page and report."""
    return f"{run}/rounds.json"


def report(run: str, ext: str) -> str:
    return f"{run}/report.{ext}"


def eval_set(task: str) -> str:
    return f"{task}/test.safetensors"


def silo_data(task: str) -> str:
    return f"{task}/train.safetensors"


def outbox_prefix(run: str, round_: int, silo: str) -> str:
    """Folder in the silo's ``outbox`` for one job's artifacts."""
    return f"runs/{run}/rounds/{round_:04d}/silos/{silo}/"


_OUTBOX_BLOB = re.compile(
    r"^runs/(?P<run>[A-Za-z0-9_.-]+)/rounds/(?P<round>\d{4,})/silos/(?P<silo>[a-z0-9-]+)/(?P<name>[A-Za-z0-9_.-]+)$"
)


def parse_outbox_blob(path: str) -> dict | None:
    """``runs/{run}/rounds/{r}/silos/{silo}/{name}`` → ``{run, round, silo, name}``, else None."""
    m = _OUTBOX_BLOB.match(path)
    if not m:
        return None
    return {"run": m["run"], "round": int(m["round"]), "silo": m["silo"], "name": m["name"]}
