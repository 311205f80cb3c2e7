"""Where things live in storage: one place for every blob path, so producers and consumers agree."""
from __future__ import annotations

import re

MODELS = "models"        # orchestrator: global models (silos may read)
RUNS = "runs"            # orchestrator: specs, manifests, aggregation records, reports
BUNDLES = "bundles"      # orchestrator: signed task bundles by hash (silos may read)
DATA = "data"            # silo: training and test data, never leaves the silo
OUTBOX = "outbox"        # silo: updates and metrics (orchestrator may read)

UPDATE = "update.safetensors"
EVALUATION = "evaluation.safetensors"   # aggregate test figures of the incoming global model
METRICS = "metrics.json"
FAILED = "failed.json"
PARTS = ("train", "test")  # the two parts of a silo's data for a task


def global_model(run: str, round_: int) -> str:
    """The global model entering ``round_`` (round 0 is the initial model), in ``models``."""
    return f"{run}/round-{round_:04d}/global.safetensors"


def run_spec(run: str) -> str:
    return f"{run}/spec.json"


def round_dir(run: str, round_: int) -> str:
    return f"{run}/rounds/{round_:04d}"


def round_manifest(run: str, round_: int) -> str:
    return f"{round_dir(run, round_)}/manifest.json"


def strategy_state(run: str, round_: int) -> str:
    """The server strategy's state entering ``round_``, in ``runs`` (the orchestrator's own: silos, which
    may read ``models``, never see optimizer moments)."""
    return f"{round_dir(run, round_)}/state.safetensors"


def aggregate_record(run: str, round_: int) -> str:
    return f"{round_dir(run, round_)}/aggregate.json"


def round_results(run: str) -> str:
    """Every completed round's result (``RoundResult``s), kept by ``observe`` for the API, page and report."""
    return f"{run}/rounds.json"


def report(run: str, ext: str) -> str:
    return f"{run}/report.{ext}"


def round_evaluation(run: str, round_: int) -> str:
    """The pooled evaluation of the model entering ``round_`` (written once per round)."""
    return f"{round_dir(run, round_)}/evaluation.json"


def run_bundle_manifest(run: str) -> str:
    """A copy of the run's signed bundle manifest (what later steps read instead of the whole bundle)."""
    return f"{run}/bundle.json"


def bundle(code_hash: str) -> str:
    """A signed bundle in ``bundles``, stored once under the hash of its signed manifest."""
    return f"{code_hash}.fedbundle"


def silo_data(task: str, part: str) -> str:
    """Folder in a silo's ``data`` holding one part (``train`` or ``test``) of a task's data."""
    if part not in PARTS:
        raise ValueError(f"data part {part!r}: expected one of {PARTS}")
    return f"{task}/{part}/"


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
