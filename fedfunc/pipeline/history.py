"""An update's payload kind and history in its safetensors metadata, and the orchestrator's check of
that history against what the run requires.

Metadata keys: ``payload`` (``weights`` | ``delta`` | ``masked``; absent means ``weights``) and
``transforms``, a JSON list of steps ``{"name", "options", "observed"?}`` in the order they ran. It is
parsed strictly (known names, plain JSON scalars, bounded size), because it comes from a silo.

What a run requires comes from its signed bundle (``SiloSide``): the proximal term when μ > 0 first (it
runs in training, before any transform), and the signed transforms, with the same options, as the last
steps in order (a silo's own transforms run before them). The payload must be what the history
produces, and one the server can aggregate.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedfunc.pipeline.base import PAYLOADS, Payload, Step, TransformError, Update
from fedfunc.pipeline.config import SiloSide, payload_after
from fedfunc.pipeline.registry import TRANSFORMS
from fedfunc.weights import UpdateRejected

PAYLOAD_KEY, HISTORY_KEY = "payload", "transforms"
PROXIMAL = "proximal"   # the FedProx training hook's step (fedfunc.pipeline.proximal)
MAX_HISTORY_BYTES, MAX_STEPS = 8192, 32
AGGREGATABLE: frozenset[Payload] = frozenset({"weights", "delta"})   # "masked": with secure aggregation


def to_metadata(update: Update) -> dict[str, str]:
    return {PAYLOAD_KEY: update.kind,
            HISTORY_KEY: json.dumps([s.wire() for s in update.history], sort_keys=True, separators=(",", ":"))}


def from_metadata(metadata: Mapping[str, str]) -> tuple[Payload, list[Step]]:
    """(payload, history) of an update's metadata; ``UpdateRejected`` (rule ``transforms``) if malformed."""
    kind = metadata.get(PAYLOAD_KEY, "weights")
    if kind not in PAYLOADS:
        raise UpdateRejected("transforms", f"payload {kind[:40]!r} is not one of {list(PAYLOADS)}")
    raw = metadata.get(HISTORY_KEY, "[]")
    if len(raw) > MAX_HISTORY_BYTES:
        raise UpdateRejected("transforms", f"history is {len(raw)} bytes (at most {MAX_HISTORY_BYTES})")
    try:
        steps = json.loads(raw)
    except json.JSONDecodeError:
        raise UpdateRejected("transforms", "history is not JSON") from None
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        raise UpdateRejected("transforms", f"history must be a list of at most {MAX_STEPS} steps")
    return kind, [_step(s, i) for i, s in enumerate(steps)]


def _step(raw: Any, i: int) -> Step:
    if not isinstance(raw, dict) or set(raw) - {"name", "options", "observed"}:
        raise UpdateRejected("transforms", f"step {i} is not {{name, options, observed?}}")
    name, options, observed = raw.get("name"), raw.get("options", {}), raw.get("observed", {})
    if name != PROXIMAL and name not in TRANSFORMS:
        raise UpdateRejected("transforms", f"step {i}: unknown transform {str(name)[:40]!r}")
    for what, values in (("options", options), ("observed", observed)):
        if not isinstance(values, dict) or not all(
                isinstance(k, str) and len(k) <= 64 and (isinstance(v, (bool, int, float)) or
                                                         (isinstance(v, str) and len(v) <= 64))
                for k, v in values.items()):
            raise UpdateRejected("transforms", f"step {i} ({name}): {what} must map names to numbers, "
                                               "booleans or short strings")
    return Step(name, options, observed)


def required_steps(side: SiloSide) -> list[Step]:
    """What every update of a run must have gone through, from its signed silo side, in order."""
    steps = [Step(PROXIMAL, {"mu": side.proximal_mu})] if side.proximal_mu > 0 else []
    return steps + [Step(t.name, t.options) for t in side.transforms]


def check_history(kind: Payload, history: list[Step], side: SiloSide) -> None:
    """``UpdateRejected`` naming the rule unless the update went through what ``side`` requires and its
    payload is what its history produces, in a kind the server can aggregate."""
    described = "[" + ", ".join(_label(s) for s in history) + "]"
    required = required_steps(side)
    if required and required[0].name == PROXIMAL and not any(_same(s, required[0]) for s in history):
        raise UpdateRejected("transforms.missing", f"the signed bundle requires {_label(required[0])} in training; "
                                                   f"the update's history is {described}")
    signed = [s for s in required if s.name != PROXIMAL]
    transforms = [s for s in history if s.name != PROXIMAL]
    tail = transforms[len(transforms) - len(signed):] if signed else []
    if len(tail) < len(signed) or not all(map(_same, signed, tail)):
        raise UpdateRejected("transforms.missing", f"the signed bundle requires [{', '.join(map(_label, signed))}] "
                                                   f"last, in order; the update's history is {described}")
    if kind not in AGGREGATABLE:
        raise UpdateRejected("transforms.payload", f"a {kind} payload needs secure aggregation, which this run "
                                                   "does not use")
    try:
        produced = payload_after([TRANSFORMS[s.name](s.options) for s in transforms])
    except TransformError as e:
        raise UpdateRejected("transforms", f"the history {described} cannot have run: {e}") from None
    if kind != produced:
        raise UpdateRejected("transforms.payload", f"payload {kind}, but the history {described} produces {produced}")


def clipped(history: list[Step]) -> bool:
    """Whether any clip step of the history scaled the update."""
    return any(s.name == "clip" and s.observed.get("clipped") is True for s in history)


def _same(a: Step, b: Step) -> bool:
    return a.name == b.name and dict(a.options) == dict(b.options)


def _label(s: Step) -> str:
    return s.name + ("(" + ", ".join(f"{k}={v}" for k, v in sorted(s.options.items())) + ")" if s.options else "")
