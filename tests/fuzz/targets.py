"""Every parser that takes outside input, as a fuzz target: hypothesis draws hostile inputs (random and
mutations of genuine ones) and the parser must either accept or refuse with its own error type —
never raise anything else (which would be a 500, a traceback or a crashed activity).

Shared by ``tests/fuzz`` (a fixed, derandomized budget in ``make test``) and ``bench/fuzz.py`` (a
longer, random one that prints cases run and findings per parser).
"""
from __future__ import annotations

import base64
import functools
import json
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfunc import layout, weights
from fedfunc.contracts import SiloJobRequest
from fedfunc.registry import SiloRecord, UnknownSilo
from fedfunc.security import Refused, keys
from fedfunc.security.bundle import open_bundle, verify_bundle
from fedfunc.security.egress import check_metrics
from fedfunc.security.policy import SiloPolicy, parse_policy
from fedfunc.security.tickets import issue_ticket, verify_ticket

# --- genuine inputs the mutations start from --------------------------------------------------------
ORCH, SCIENTIST = keys.generate(), keys.generate()


def _signed_bundle() -> bytes:
    from fedfunc.tasks.builtin import task_dir
    from fedfunc.tasks.signing import build_bundle
    return build_bundle(task_dir("digits"), SCIENTIST)


ARRAYS = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "b": np.zeros(4, np.float32),
          "steps": np.array(3, np.int64)}
MANIFEST = weights.ModelManifest.from_arrays(ARRAYS)
META = {"run": "run-1", "round": "0", "silo": "site-1", "nonce": "n0", "num_samples": "10"}
UPDATE = weights.encode({k: v + 0.01 if v.dtype.kind == "f" else v for k, v in ARRAYS.items()}, META)
MODEL_URL = "http://127.0.0.1:10000/fedorch/models/run-1/round-0000/global.safetensors"
BUNDLE = _signed_bundle()
CODE_HASH = open_bundle(BUNDLE).code_hash
TICKET = dict(run="run-1", round=0, silo="site-1", code_hash=CODE_HASH, nonce="n0", model_url=MODEL_URL,
              model_sha256="ab" * 32)
TOKEN = issue_ticket(ORCH, **TICKET)
POLICY = SiloPolicy(silo="site-1", orchestrator_keys=[keys.public_b64(ORCH.public_key())],
                    trusted_signers=[keys.public_b64(SCIENTIST.public_key())], allowed_tasks=["digits"])
SPEC = {"task": "digits", "silos": ["site-1", "site-2"], "rounds": 2, "bundle": CODE_HASH, "max_update_norm": 5.0}
SILO_REQUEST = {"name": "site-9", "compute": "local", "max_samples": 100,
                "policy": {"trusted_signers": [keys.public_b64(SCIENTIST.public_key())], "allowed_tasks": ["digits"]}}
JOB_REQUEST = SiloJobRequest(run_id="run-1", round=0, silo="site-1", nonce="n0", task="digits",
                             model_url=MODEL_URL, model_sha256="ab" * 32,
                             outbox_prefix=layout.outbox_prefix("run-1", 0, "site-1"), ticket=TOKEN,
                             bundle=CODE_HASH).model_dump(mode="json")

# --- strategies ---------------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats() | st.text(max_size=30) | st.sampled_from(["", "all", "digits", "site-1", "[red]x[/]", "\x00",
                                                                     "../../etc", "a" * 300, "1e309"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
deep = st.integers(min_value=1, max_value=3000).map(lambda n: json.loads("[" * min(n, 900) + "]" * min(n, 900)))


@st.composite
def mutated(draw, genuine: object, junk=json_values) -> object:
    """``genuine`` with a few keys (anywhere in it) replaced by junk, deleted or added."""
    value = json.loads(json.dumps(genuine))
    for _ in range(draw(st.integers(1, 3))):
        paths, stack = [], [((), value)]
        while stack:
            path, node = stack.pop()
            paths.append(path)
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            stack.extend((path + (k,), v) for k, v in items)
        path = draw(st.sampled_from(paths))
        if not path:
            return draw(junk | deep)
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(junk)
        else:
            parent[path[-1]] = draw(junk | deep)
    return value


def as_json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def _edited(draw, genuine: bytes, kind: str) -> bytes:
    """``genuine`` with up to 8 bytes flipped (``flip``), cut short and padded with junk (``cut``), or junk
    spliced in (``splice``)."""
    if kind == "flip":
        data = bytearray(genuine)
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[at] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "cut":
        return genuine[:draw(st.integers(0, len(genuine)))] + draw(st.binary(max_size=64))
    at = draw(st.integers(0, len(genuine)))
    return genuine[:at] + draw(st.binary(min_size=1, max_size=64)) + genuine[at:]


@st.composite
def safetensors_blobs(draw) -> bytes:
    """Genuine update bytes with the header rewritten, bytes flipped, cut or padded, or the length forged."""
    n = struct.unpack("<Q", UPDATE[:8])[0]
    header, tail = json.loads(UPDATE[8:8 + n]), UPDATE[8 + n:]
    kind = draw(st.sampled_from(["header", "flip", "cut", "length", "random"]))
    if kind == "header":
        text = json.dumps(draw(mutated(header)), allow_nan=True).encode()
        return len(text).to_bytes(8, "little") + text + tail
    if kind in ("flip", "cut"):
        return _edited(draw, UPDATE, kind)
    if kind == "length":
        return draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little") + UPDATE[8:]
    return draw(st.binary(max_size=300))


@st.composite
def bundle_blobs(draw) -> bytes:
    """The genuine signed bundle (a ZIP) with bytes flipped, cut, padded or spliced, or random bytes."""
    kind = draw(st.sampled_from(["flip", "cut", "splice", "random"]))
    if kind == "random":
        return b"PK\x03\x04" + draw(st.binary(max_size=300))
    return _edited(draw, BUNDLE, kind)


@st.composite
def csv_tables(draw) -> bytes:
    """CSV text around the columns a task asks for: rows of junk cells, missing or extra cells, odd headers."""
    header = draw(st.sampled_from(["x,label,name", "label,x,name", "x,label", "x;label;name", ""]) | st.text(max_size=20))
    cell = st.sampled_from(["1", "-2.5", "1e309", "nan", "", "a", '"q,uoted"', "9" * 30, "\x00"]) | st.text(max_size=6)
    rows = draw(st.lists(st.lists(cell, max_size=4).map(",".join), max_size=6))
    return "\n".join([header, *rows]).encode(draw(st.sampled_from(["utf-8", "utf-16"])), errors="replace")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def tokens(draw) -> str | None:
    prefix, payload, sig = TOKEN.split(".")
    kind = draw(st.sampled_from(["payload", "edit", "text", "none"]))
    if kind == "payload":
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        return f"{prefix}.{b64url(as_json_bytes(draw(mutated(claims))))}.{sig}"
    if kind == "edit":
        at = draw(st.integers(0, len(TOKEN) - 1))
        return TOKEN[:at] + draw(st.text(min_size=0, max_size=3)) + TOKEN[at + 1:]
    if kind == "text":
        return draw(st.text(max_size=200))
    return draw(st.none() | st.just(""))


SUBJECTS = st.builds(
    lambda c, run, r, silo, name: f"/blobServices/default/containers/{c}/blobs/runs/{run}/rounds/{r}/silos/{silo}/{name}",
    st.sampled_from(["outbox", "data", "Outbox", ""]) | st.text(max_size=8),
    st.sampled_from(["run-1", "r.1", ""]) | st.text(max_size=10),
    st.sampled_from(["0000", "0003", "99999", "-001"]) | st.text(max_size=6),
    st.sampled_from(["site-1", "site-2", "SITE-1"]) | st.text(max_size=10),
    st.sampled_from([layout.UPDATE, layout.EVALUATION, layout.FAILED, layout.METRICS]) | st.text(max_size=10))
TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/{}"


@st.composite
def grid_events(draw):
    import azure.functions as func

    return func.EventGridEvent(
        id=draw(st.text(max_size=8)), data=draw(json_values | mutated({"eTag": "0x1", "contentLength": 42})),
        topic=draw(st.sampled_from([TOPIC.format("silo01"), TOPIC.format("silo02"), "", None]) | st.text(max_size=20)),
        subject=draw(SUBJECTS | st.text(max_size=60) | st.none()),
        event_type=draw(st.sampled_from(["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted", None])
                        | st.text(max_size=20)),
        event_time=None, data_version="1")


# --- the parsers, with stand-ins only where they would reach storage ------------------------------------
class FakeServices:
    """What the Event Grid routes and the run edge look up: one registered silo and its outbox."""

    def __init__(self, outbox_bytes: bytes = b'{"reason": "x"}'):
        self.outbox_bytes = outbox_bytes
        self.store = SimpleNamespace(
            get_bytes=lambda container, path: BUNDLE if (container, path) == (layout.BUNDLES, layout.bundle(CODE_HASH))
            else None,
            get_json=lambda container, path: None)  # no round manifest: an evaluation is routed as any other
        self.audit = SimpleNamespace(record=lambda kind, **fields: None)
        self.registry = SimpleNamespace(get=self._get, list=lambda status=None: [self._get("site-1")])

    @staticmethod
    def _get(name: str) -> SiloRecord:
        if name != "site-1":
            raise UnknownSilo(name)
        return SiloRecord(name="site-1", account="silo01", blob_url="http://127.0.0.1/silo01", compute="local",
                          policy_ref="x")

    def outbox_blob(self, record, path):
        from fedfunc.coordinator.services import OutboxBlob
        return (OutboxBlob(etag="0x1", size=42) if path.endswith((layout.UPDATE, layout.EVALUATION, layout.FAILED))
                else None)

    def outbox_reader(self):
        def read(silo, path, max_bytes):
            if len(self.outbox_bytes) > max_bytes:
                raise ValueError("over the bound")
            return self.outbox_bytes
        return read


def _with_fake_services(module_name: str, function: str) -> Callable[[object], object]:
    """Call ``module.function(value)`` with the module's ``services`` swapped for ``FakeServices``."""
    import importlib

    def call(value):
        module = importlib.import_module(module_name)
        saved, module.services = module.services, FakeServices
        try:
            return getattr(module, function)(value)
        finally:
            module.services = saved
    return call


def _silo_request(body) -> object:
    from fedfunc.coordinator.onboarding import parse_request
    return parse_request(body)


def _job_request(text: bytes) -> object:
    request = SiloJobRequest.model_validate_json(text)
    verify_ticket(request.ticket, POLICY.orchestrator_keys, silo="site-1", run=request.run_id, round=request.round,
                  code_hash=request.bundle or "", nonce=request.nonce, model_url=request.model_url,
                  model_sha256=request.model_sha256)
    return verify_bundle(BUNDLE, POLICY.trusted_signers, expected_hash=request.bundle)


def _refusals() -> dict[str, tuple[type[Exception], ...]]:
    from pydantic import ValidationError

    from fedfunc.coordinator.onboarding import OnboardingError
    from triggers.http_util import BadRequest
    return {"refused": (Refused,), "update": (weights.UpdateRejected,), "bad_request": (BadRequest,),
            "onboarding": (OnboardingError,), "job_request": (ValidationError, Refused),
            "data": (weights.UpdateRejected, ValueError), "nothing": ()}


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy
    parse: Callable[[object], object]
    refusals: str  # key of _refusals(): the error types that are clean refusals


def _silo_data(data: bytes):
    """A silo's training part as the digits task reads it (through the platform's DataReader)."""
    from fedfunc.tasks.data import DataReader, MemoryDataSource
    return _digits_task().read_data(DataReader(MemoryDataSource({"digits/train/data.safetensors": data}),
                                               "digits/train/"))


@functools.cache
def _digits_task():
    from fedfunc.tasks.builtin import task_dir
    from fedfunc.tasks.signing import prepare
    return prepare(task_dir("digits")).task


def _silo_table(data: bytes):
    from fedfunc.tasks.data import DataReader, MemoryDataSource
    reader = DataReader(MemoryDataSource({"t/train/a.csv": data}), "t/train/")
    return reader.table("*.csv", {"x": "float32", "label": "int64", "name": "str"})


TARGETS = [
    Target("safetensors header", safetensors_blobs(), weights.read_header, "update"),
    Target("safetensors decode", safetensors_blobs(), weights.decode, "update"),
    Target("update validation", safetensors_blobs(), lambda data: weights.validate_update(
        data, MANIFEST, expected={**META, "silos": ["site-1"]}, global_arrays=ARRAYS, max_norm=10.0), "update"),
    Target("silo training data", safetensors_blobs(), _silo_data, "data"),
    Target("silo CSV table", csv_tables(), _silo_table, "data"),
    Target("run spec", mutated(SPEC) | json_values | deep,
           _with_fake_services("triggers.runs_api", "validate_run_request"), "bad_request"),
    Target("silo request", mutated(SILO_REQUEST) | json_values | deep, _silo_request, "onboarding"),
    Target("silo job request", mutated(JOB_REQUEST).map(as_json_bytes) | st.binary(max_size=200), _job_request,
           "job_request"),
    Target("silo policy", mutated(POLICY.model_dump(mode="json")).map(as_json_bytes) | st.binary(max_size=100),
           parse_policy, "refused"),
    Target("metrics", (mutated({"loss": 0.5, "accuracy": 0.9, "num_samples": 10}) | json_values | deep
                        | st.dictionaries(st.text(max_size=70), json_values, max_size=40))
           .map(as_json_bytes) | st.binary(max_size=100), check_metrics, "refused"),
    Target("event grid: on_update", grid_events(), _with_fake_services("triggers.silo_events", "route_outbox_event"),
           "nothing"),
    Target("event grid: data upload", grid_events(), _with_fake_services("triggers.retraining", "upload_of"),
           "nothing"),
    Target("signed bundle", bundle_blobs(), lambda b: verify_bundle(b, POLICY.trusted_signers), "refused"),
    Target("job ticket", tokens(), lambda token: verify_ticket(token, POLICY.orchestrator_keys, **TICKET),
           "refused"),
]


def fuzz(target: Target, max_examples: int, *, derandomize: bool) -> Counter:
    """Run ``target``; returns outcome counts (``accepted`` or the refusal's rule/type). An input that
    raises anything else fails with hypothesis's shrunk example."""
    allowed = _refusals()[target.refusals]
    counts: Counter = Counter()

    @settings(max_examples=max_examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(target.strategy)
    def parse(value):
        try:
            target.parse(value)
            counts["accepted"] += 1
        except allowed as e:
            counts[getattr(e, "rule", None) or type(e).__name__] += 1

    parse()
    return counts
