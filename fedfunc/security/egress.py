"""What may leave a silo: exactly ``metrics.json``, ``evaluation.safetensors`` and ``update.safetensors``
from a training job, only ``evaluation.safetensors`` from an evaluate-only job, each checked first.

The update must match the global model's manifest (names, shapes, dtypes), be finite, within the size
bound and carry this job's run/round/silo/nonce (``fedfunc.weights.validate_update``); the metrics must
be a small flat object of finite numbers — no strings, so no free-form channel for data to leak
through; the evaluation is three numeric tensors — example count, loss sum, confusion matrix of the
signed class count — bound to the job (``fedfunc.evaluation.check_evaluation``). The orchestrator runs
the same checks again on what it receives.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from fedfunc import layout
from fedfunc.evaluation import check_evaluation
from fedfunc.security import Refused
from fedfunc.pipeline import SiloSide, check_history, from_metadata
from fedfunc.weights import ModelManifest, UpdateRejected, read_header, validate_update

ALLOWED = {"train": frozenset({layout.UPDATE, layout.METRICS, layout.EVALUATION}),
           "evaluate": frozenset({layout.EVALUATION})}
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_METRICS = 32
MAX_METRICS_BYTES = 4096


def check_metrics(data: bytes) -> dict[str, int | float]:
    """The metrics object if it is a flat map of ≤ 32 snake_case names to finite numbers; else ``Refused``."""
    def refuse(why: str):
        raise Refused("egress.metrics_schema", layout.METRICS, why)

    if len(data) > MAX_METRICS_BYTES:
        refuse(f"{len(data)} bytes exceeds {MAX_METRICS_BYTES}")
    try:
        metrics = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        refuse("not JSON")
    if not isinstance(metrics, dict) or not metrics or len(metrics) > MAX_METRICS:
        refuse(f"must be a non-empty JSON object of at most {MAX_METRICS} numbers")
    for name, value in metrics.items():
        if not METRIC_NAME.match(name):
            refuse(f"metric name {name[:40]!r} is not snake_case (a-z, 0-9, _; ≤ 64)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            refuse(f"metric {name!r} = {str(value)[:40]!r} is not a finite number")
    if not isinstance(metrics.get("num_samples"), int) or metrics["num_samples"] < 1:
        refuse("num_samples must be a positive integer count")
    return metrics


def check_egress(artifacts: Mapping[str, bytes], *, mode: str, manifest: ModelManifest, num_classes: int,
                 expected: Mapping[str, object], max_bytes: int | None = None, side: SiloSide | None = None) -> None:
    """Refuse the whole set unless it is exactly the artifacts a ``mode`` job publishes and each passes; an
    update also carries the history the signed silo ``side`` requires (``fedfunc.pipeline.check_history``)."""
    names, allowed = set(artifacts), ALLOWED[mode]
    if names != allowed:
        odd = sorted(names - allowed) or sorted(allowed - names)
        raise Refused("egress.artifact_name", ", ".join(odd),
                      f"a {mode} job publishes exactly {sorted(allowed)}, got {sorted(names)}")
    try:
        check_evaluation(artifacts[layout.EVALUATION], num_classes=num_classes, expected=expected)
    except UpdateRejected as e:
        raise Refused(f"egress.evaluation.{e.rule}", layout.EVALUATION, e.detail) from None
    if mode == "evaluate":
        return
    metrics = check_metrics(artifacts[layout.METRICS])
    try:
        validate_update(artifacts[layout.UPDATE], manifest, expected=expected, max_bytes=max_bytes)
    except UpdateRejected as e:
        raise Refused(f"egress.update.{e.rule}", layout.UPDATE + (f" tensor {e.tensor!r}" if e.tensor else ""),
                      e.detail) from None
    _, meta = read_header(artifacts[layout.UPDATE])
    try:
        check_history(*from_metadata(meta), side or SiloSide())
    except UpdateRejected as e:
        raise Refused(f"egress.update.{e.rule}", layout.UPDATE, e.detail) from None
    if meta["num_samples"] != str(metrics["num_samples"]):
        raise Refused("egress.num_samples", layout.METRICS,
                      f"metrics count {metrics['num_samples']} samples, the update {meta['num_samples']}")
