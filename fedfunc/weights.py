"""Weights on the wire: safetensors bytes, the model manifest, and update validation.

Only safetensors is used (a JSON header plus raw little-endian buffers), so reading an update
can never execute code the way pickle / ``torch.load`` can. Updates come from silos, which the
orchestrator does not fully trust: ``validate_update`` checks size, header and the round's identity
before any tensor is read, then values and norm, and says which rule failed on which tensor.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from fedfunc.kernels import sumsq

# safetensors dtype codes → numpy dtype names (the subset numpy can represent).
_ST_TO_NUMPY = {
    "F64": "float64", "F32": "float32", "F16": "float16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}
_HEADER_LEN_BYTES = 8
METADATA_KEYS = ("run", "round", "silo", "nonce", "num_samples")
# Optional metadata: when the silo job passed its steps (ISO 8601, UTC), for the round's timeline only.
TIME_KEYS = {"queued": "queued_at", "started": "started_at", "trained": "trained_at"}
# The payload kind and silo-side history (``fedfunc.pipeline.history``) and the job's step times; no other
# key may travel in an update's metadata, so it is no free-form channel out of a silo.
OPTIONAL_METADATA_KEYS = ("payload", "transforms", *TIME_KEYS.values())


class UpdateRejected(ValueError):
    """An update broke a validation rule; ``rule`` names it, ``tensor`` the tensor if any."""

    def __init__(self, rule: str, detail: str, tensor: str | None = None):
        self.rule, self.detail, self.tensor = rule, detail, tensor
        where = f" (tensor {tensor!r})" if tensor else ""
        super().__init__(f"{rule}{where}: {detail}")


def sha256(data: bytes) -> str:
    """Hex digest; manifests pin the global model by it."""
    return hashlib.sha256(data).hexdigest()


def encode(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise named arrays (+ string metadata) to safetensors bytes."""
    bad = [k for k, v in (metadata or {}).items() if not isinstance(v, str)]
    if bad:
        raise TypeError(f"safetensors metadata values must be str; not str: {bad}")
    # np.require, unlike np.ascontiguousarray, keeps 0-d arrays 0-d.
    contiguous = {name: np.require(a, requirements="C") for name, a in arrays.items()}
    return _canonical_header(_st_save(contiguous, metadata=dict(metadata) if metadata else None))


def _canonical_header(data: bytes) -> bytes:
    """The same bytes for the same content: safetensors writes its metadata map in hash order, so a
    re-run of an idempotent step would otherwise produce a different sha256. Only the JSON header is
    rewritten (sorted keys, space-padded to 8 bytes as the format requires); tensor bytes and offsets stay."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def decode(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse safetensors bytes into (arrays, metadata). Raises ``UpdateRejected`` if not safetensors."""
    _, metadata = read_header(data)
    return _load_tensors(data), metadata


def read_header(data: bytes) -> tuple[dict[str, dict], dict[str, str]]:
    """Parse only the header: ({name: {dtype, shape, data_offsets}}, metadata). Loads no tensor."""
    if len(data) < _HEADER_LEN_BYTES:
        raise UpdateRejected("not_safetensors", f"{len(data)} bytes is shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:_HEADER_LEN_BYTES])
    if n > len(data) - _HEADER_LEN_BYTES:
        raise UpdateRejected("not_safetensors", f"header length {n} exceeds the {len(data)}-byte file")
    try:
        header = json.loads(bytes(data[_HEADER_LEN_BYTES:_HEADER_LEN_BYTES + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UpdateRejected("not_safetensors", f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise UpdateRejected("not_safetensors", "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UpdateRejected("not_safetensors", "__metadata__ is not a string-to-string map")
    for name, entry in header.items():
        if not _is_tensor_entry(entry):
            raise UpdateRejected("not_safetensors", "entry is not {dtype: str, shape: [int ≥ 0], "
                                 "data_offsets: [int, int]}", name)
    return header, metadata


def _is_tensor_entry(entry: object) -> bool:
    """Well-typed header entry, so later rules compare values instead of tripping on types."""
    def ints(v: object) -> bool:
        return isinstance(v, list) and all(type(i) is int and i >= 0 for i in v)

    return (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and ints(entry.get("shape"))
            and ints(entry.get("data_offsets")) and len(entry["data_offsets"]) == 2)


@dataclass(frozen=True)
class TensorLayout:
    """Where one tensor's elements sit in an update's bytes."""

    offset: int  # absolute byte offset of element 0
    count: int
    dtype: np.dtype  # little-endian
    shape: tuple[int, ...]


def _layout(header: Mapping[str, dict], size: int, header_end: int) -> dict[str, TensorLayout]:
    """The layout checks safetensors itself makes, from the header alone (so a range reader makes
    them before it reads any tensor): each tensor's byte range matches its shape × dtype, and the
    ranges tile the data section (``header_end`` to ``size``) exactly."""
    end_of_previous = 0
    layout = {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_ST_TO_NUMPY[entry["dtype"]]).newbyteorder("<")
        count = math.prod(entry["shape"])
        if begin != end_of_previous or end - begin != count * dtype.itemsize or header_end + end > size:
            raise UpdateRejected("not_safetensors", f"data_offsets {[begin, end]} do not tile the "
                                 f"{size - header_end}-byte data section for {count} × {dtype.itemsize} bytes",
                                 name)
        layout[name] = TensorLayout(header_end + begin, count, dtype, tuple(entry["shape"]))
        end_of_previous = end
    if header_end + end_of_previous != size:
        raise UpdateRejected("not_safetensors", f"data section is {size - header_end} bytes, tensors cover "
                             f"{end_of_previous}")
    return layout


def _tensor_views(data: bytes, layout: Mapping[str, TensorLayout]) -> dict[str, np.ndarray]:
    """Read-only arrays viewing ``data`` (no copy)."""
    return {name: np.frombuffer(data, dtype=t.dtype, count=t.count, offset=t.offset).reshape(t.shape)
            for name, t in layout.items()}


def _load_tensors(data: bytes) -> dict[str, np.ndarray]:
    try:
        return _st_load(data if isinstance(data, bytes) else bytes(data))
    except (SafetensorError, ValueError, TypeError) as e:
        raise UpdateRejected("not_safetensors", f"tensor data unreadable ({e})") from None


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, e.g. "float32"


@dataclass(frozen=True)
class ModelManifest:
    """Names, shapes and dtypes of a model's tensors: what every update must match exactly."""

    tensors: Mapping[str, TensorSpec]

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ModelManifest:
        return cls({k: TensorSpec(tuple(int(d) for d in a.shape), a.dtype.name) for k, a in arrays.items()})

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data an update of this model carries (header excluded)."""
        return sum(math.prod(t.shape) * np.dtype(t.dtype).itemsize for t in self.tensors.values())

    def to_json(self) -> str:
        return json.dumps({k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in self.tensors.items()},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        raw = json.loads(text)
        return cls({k: TensorSpec(tuple(v["shape"]), str(v["dtype"])) for k, v in raw.items()})


@dataclass(frozen=True)
class ValidatedUpdate:
    """An update that passed every rule. ``arrays`` and ``num_samples`` are what aggregation reads.

    ``arrays`` are read-only views of the validated bytes (no copy: one blob in memory per update).
    It is also an update source for block-wise strategies (``fedfunc.aggregation.sources``):
    ``key`` names it (its silo), ``read`` returns a block of a flattened tensor, again without a copy.
    """

    arrays: dict[str, np.ndarray]
    num_samples: int
    metadata: dict[str, str]
    norm: float | None = None  # ‖update − global‖₂ (‖update‖₂ without a global model), as measured
    values_checked = True

    @property
    def key(self) -> str:
        return self.metadata["silo"]

    def read(self, tensor: str, start: int, stop: int) -> np.ndarray:
        return self.arrays[tensor].reshape(-1)[start:stop]


@dataclass(frozen=True)
class UpdateHeader:
    """An update whose size, header, metadata and manifest match passed (every rule but the values)."""

    num_samples: int
    metadata: dict[str, str]
    layout: dict[str, TensorLayout]


# Room for the JSON header on top of the tensor bytes when no explicit size bound is given.
HEADER_ALLOWANCE = 1 << 20


def check_update_header(prefix: bytes, size: int, manifest: ModelManifest, *, expected: Mapping[str, object],
                        max_bytes: int | None = None) -> UpdateHeader:
    """Every rule of ``validate_update`` that needs no tensor value, on the first bytes of a
    ``size``-byte update (``prefix`` holds at least the 8-byte length and the JSON header)."""
    limit = manifest.nbytes + HEADER_ALLOWANCE if max_bytes is None else max_bytes
    if size > limit:
        raise UpdateRejected("size", f"{size} bytes exceeds the {limit}-byte bound")
    header, metadata = read_header(prefix)
    num_samples = _check_metadata(metadata, expected)
    _check_header_matches(header, manifest)
    header_end = _HEADER_LEN_BYTES + struct.unpack("<Q", prefix[:_HEADER_LEN_BYTES])[0]
    return UpdateHeader(num_samples, metadata, _layout(header, size, header_end))


def validate_update(
    data: bytes,
    manifest: ModelManifest,
    *,
    expected: Mapping[str, object],
    global_arrays: Mapping[str, np.ndarray] | None = None,
    max_bytes: int | None = None,
    max_norm: float | None = None,
) -> ValidatedUpdate:
    """Check an update blob against the manifest and the round, cheapest rules first.

    ``expected`` holds ``run``, ``round``, ``silo`` (the silo whose outbox the blob came from) and
    ``nonce``; optionally ``silos``, the silos expected in this round. ``max_bytes`` defaults to the
    manifest's tensor bytes plus ``HEADER_ALLOWANCE``. ``max_norm`` bounds ‖update − global‖₂ over
    all tensors (‖update‖₂ when ``global_arrays`` is None); None means unbounded. Values are read
    once: one fused pass gives both the finiteness and the norm rule.
    """
    checked = check_update_header(data, len(data), manifest, expected=expected, max_bytes=max_bytes)
    arrays = _tensor_views(data, checked.layout)
    norm = check_value_sums({name: sumsq(a.reshape(-1), None if global_arrays is None else
                                         np.asarray(global_arrays[name]).reshape(-1))
                             for name, a in arrays.items()}, max_norm, global_arrays is not None)
    return ValidatedUpdate(arrays, checked.num_samples, checked.metadata, norm)


def _check_metadata(metadata: Mapping[str, str], expected: Mapping[str, object]) -> int:
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise UpdateRejected("metadata", f"missing metadata keys {missing}")
    extra = sorted(set(metadata) - set(METADATA_KEYS) - set(OPTIONAL_METADATA_KEYS))
    if extra:
        raise UpdateRejected("metadata", f"unexpected metadata keys {[k[:40] for k in extra[:5]]}")
    for key in ("run", "round", "nonce"):
        if metadata[key] != str(expected[key]):
            raise UpdateRejected(key, f"update says {key}={metadata[key]!r}, expected {str(expected[key])!r}")
    silo = metadata["silo"]
    if silo != expected["silo"] or ("silos" in expected and silo not in expected["silos"]):
        raise UpdateRejected("silo", f"unexpected silo {silo!r} (expected {expected['silo']!r} in this round)")
    raw = metadata["num_samples"]
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise UpdateRejected("num_samples", f"num_samples={raw!r} is not a positive integer")
    return int(raw)


def _check_header_matches(header: Mapping[str, dict], manifest: ModelManifest) -> None:
    missing = sorted(manifest.tensors.keys() - header.keys())
    if missing:
        raise UpdateRejected("missing_tensor", f"update lacks {len(missing)} tensor(s) of the manifest", missing[0])
    extra = sorted(header.keys() - manifest.tensors.keys())
    if extra:
        raise UpdateRejected("extra_tensor", f"update has {len(extra)} tensor(s) not in the manifest", extra[0])
    for name, spec in manifest.tensors.items():
        entry = header[name]
        dtype = _ST_TO_NUMPY.get(entry["dtype"], entry["dtype"])
        if dtype != spec.dtype:
            raise UpdateRejected("dtype", f"dtype {dtype}, manifest says {spec.dtype}", name)
        if tuple(entry["shape"]) != spec.shape:
            raise UpdateRejected("shape", f"shape {tuple(entry['shape'])}, manifest says {spec.shape}", name)


def check_value_sums(sums: Mapping[str, float], max_norm: float | None, relative: bool) -> float:
    """The value rules, from each tensor's ‖u − global‖² (‖u‖² if not ``relative``), in tensor order:
    a NaN or inf sum means the tensor holds a NaN or inf (see ``kernels.sumsq``). Returns the norm."""
    for name, sq in sums.items():
        if not math.isfinite(sq):
            raise UpdateRejected("non_finite", "contains NaN or Inf", name)
    norm = math.sqrt(sum(sums.values()))
    if max_norm is not None and norm > max_norm:
        what = "‖update − global‖₂" if relative else "‖update‖₂"
        raise UpdateRejected("norm", f"{what} = {norm:.6g} exceeds the bound {max_norm:.6g}")
    return norm


def model_to_arrays(module) -> dict[str, np.ndarray]:
    """A torch module's state (parameters and buffers) as owned numpy arrays."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_arrays_into(module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load arrays into a torch module; names and shapes must match exactly (strict)."""
    import torch

    module.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in arrays.items()}, strict=True)
