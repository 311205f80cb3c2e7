"""Weights I/O and every rejection rule of validate_update."""
from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch

from fedfunc.weights import (ModelManifest, UpdateRejected, decode, encode, load_arrays_into, model_to_arrays,
                             read_header, sha256, validate_update)

GLOBAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
MANIFEST = ModelManifest.from_arrays(GLOBAL)
EXPECTED = {"run": "run1", "round": 3, "silo": "a", "nonce": "n0nce", "silos": ["a", "b"]}
META = {"run": "run1", "round": "3", "silo": "a", "nonce": "n0nce", "num_samples": "40"}


def good_arrays():
    return {"w": np.full((3, 2), 0.5, np.float32), "b": np.ones(2, np.float32)}


def blob(arrays=None, **meta_changes):
    meta = {**META, **meta_changes}
    return encode(good_arrays() if arrays is None else arrays, {k: v for k, v in meta.items() if v is not None})


def rejected(data, manifest=MANIFEST, **kwargs) -> UpdateRejected:
    with pytest.raises(UpdateRejected) as e:
        validate_update(data, manifest, expected=kwargs.pop("expected", EXPECTED), **kwargs)
    return e.value


def test_roundtrip_keeps_arrays_metadata_dtypes_and_scalars():
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array(7, np.int64),
              "t": np.ones((2, 2), np.float64).T}
    out, meta = decode(encode(arrays, {"k": "v"}))
    assert meta == {"k": "v"}
    for k, a in arrays.items():
        assert out[k].dtype == a.dtype and out[k].shape == a.shape
        np.testing.assert_array_equal(out[k], a)


def test_encode_refuses_non_string_metadata():
    with pytest.raises(TypeError, match="round"):
        encode(GLOBAL, {"round": 3})


def test_sha256_is_hex_of_bytes():
    assert sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_manifest_json_roundtrip():
    m = ModelManifest.from_arrays({**GLOBAL, "step": np.array(1, np.int64)})
    assert ModelManifest.from_json(m.to_json()) == m
    assert m.nbytes == 6 * 4 + 2 * 4 + 8


def test_valid_update_passes_with_its_count_and_metadata():
    v = validate_update(blob(), MANIFEST, expected=EXPECTED, global_arrays=GLOBAL, max_norm=10.0)
    assert v.num_samples == 40 and v.metadata["silo"] == "a"
    np.testing.assert_array_equal(v.arrays["w"], good_arrays()["w"])


def test_pickle_bytes_are_not_safetensors():
    e = rejected(pickle.dumps(good_arrays()))
    assert e.rule == "not_safetensors"


@pytest.mark.parametrize("data", [b"", b"\x01\x02", struct.pack("<Q", 10**6) + b"{}",
                                  struct.pack("<Q", 4) + b"nope", struct.pack("<Q", 2) + b"[]"])
def test_malformed_headers_are_rejected(data):
    assert rejected(data).rule == "not_safetensors"


def _with_header(header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * 8


@pytest.mark.parametrize("entry", [
    5, {"dtype": "F32", "shape": [2]}, {"dtype": 1, "shape": [2], "data_offsets": [0, 8]},
    {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}, {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
    {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, {"dtype": "F32", "shape": [2], "data_offsets": [0]},
])
def test_ill_typed_header_entries_are_rejected_naming_the_tensor(entry):
    e = rejected(_with_header({"__metadata__": META, "b": entry}))
    assert (e.rule, e.tensor) == ("not_safetensors", "b")


def test_non_string_metadata_is_not_safetensors():
    assert rejected(_with_header({"__metadata__": {**META, "num_samples": 40}})).rule == "not_safetensors"


def test_random_bytes_never_escape_as_other_errors():
    rng = np.random.default_rng(0)
    good = blob()
    for _ in range(300):
        data = bytearray(good)
        for i in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[i] = int(rng.integers(0, 256))
        try:
            validate_update(bytes(data), MANIFEST, expected=EXPECTED)
        except UpdateRejected:
            pass


def test_data_offsets_beyond_buffer_are_rejected_on_load():
    good = blob()
    assert rejected(good[:-4]).rule == "not_safetensors"


def _tamper_header(data: bytes, change) -> bytes:
    """Rewrite an encoded file's header (same tensor bytes) with ``change(header)`` applied."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


@pytest.mark.parametrize("change", [
    lambda h: h["b"].update(data_offsets=[h["b"]["data_offsets"][0], h["b"]["data_offsets"][1] - 4]),  # short
    lambda h: h["w"].update(data_offsets=[0, 8]),  # overlaps b / leaves a gap
    lambda h: h["b"].update(data_offsets=[h["b"]["data_offsets"][0] + 4, h["b"]["data_offsets"][1] + 4]),  # past end
])
def test_tensor_byte_ranges_must_tile_the_data(change):
    e = rejected(_tamper_header(blob(), change))
    assert e.rule == "not_safetensors"


def test_trailing_bytes_are_rejected():
    e = rejected(blob() + b"\0" * 8)
    assert e.rule == "not_safetensors" and "cover" in str(e)


def test_validated_arrays_are_read_only_views():
    v = validate_update(blob(), MANIFEST, expected=EXPECTED)
    assert not v.arrays["w"].flags.writeable


def test_oversized_update_rejected_before_parsing():
    e = rejected(b"\xff" * 100 + blob(), max_bytes=100)
    assert e.rule == "size" and "100-byte bound" in str(e)


def test_default_size_bound_derives_from_manifest():
    huge = blob({"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32),
                 "junk": np.zeros(1 << 19, np.float32)})
    assert rejected(huge).rule == "size"


def test_missing_tensor_named():
    e = rejected(blob({"w": good_arrays()["w"]}))
    assert (e.rule, e.tensor) == ("missing_tensor", "b") and "'b'" in str(e)


def test_extra_tensor_named():
    e = rejected(blob({**good_arrays(), "evil": np.zeros(1, np.float32)}))
    assert (e.rule, e.tensor) == ("extra_tensor", "evil")


def test_wrong_shape_named():
    e = rejected(blob({**good_arrays(), "w": np.zeros((2, 3), np.float32)}))
    assert (e.rule, e.tensor) == ("shape", "w")


def test_wrong_dtype_named():
    e = rejected(blob({**good_arrays(), "b": np.zeros(2, np.float64)}))
    assert (e.rule, e.tensor) == ("dtype", "b") and "float64" in str(e)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_named(bad):
    arrays = good_arrays()
    arrays["w"][1, 1] = bad
    e = rejected(blob(arrays))
    assert (e.rule, e.tensor) == ("non_finite", "w")


def test_norm_is_measured_against_global():
    # ‖update − global‖₂ with global = update is 0: passes even with a tiny bound.
    validate_update(blob(), MANIFEST, expected=EXPECTED, global_arrays=good_arrays(), max_norm=1e-9)
    # Against zeros: sqrt(6·0.25 + 2·1) = sqrt(3.5) ≈ 1.87.
    e = rejected(blob(), global_arrays=GLOBAL, max_norm=1.8)
    assert e.rule == "norm" and "1.87" in str(e)
    validate_update(blob(), MANIFEST, expected=EXPECTED, global_arrays=GLOBAL, max_norm=1.9)


def test_norm_without_global_bounds_the_update_itself():
    assert rejected(blob(), max_norm=1.0).rule == "norm"


@pytest.mark.parametrize("key,value", [("run", "other"), ("round", "2"), ("nonce", "replayed")])
def test_wrong_round_identity(key, value):
    e = rejected(blob(**{key: value}))
    assert e.rule == key and value in str(e)


def test_silo_not_matching_its_outbox():
    assert rejected(blob(silo="b")).rule == "silo"


def test_silo_not_expected_this_round():
    e = rejected(blob(silo="c"), expected={**EXPECTED, "silo": "c"})
    assert e.rule == "silo" and "'c'" in str(e)


def test_missing_metadata_named():
    e = rejected(blob(num_samples=None))
    assert e.rule == "metadata" and "num_samples" in str(e)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many", ""])
def test_invalid_num_samples(value):
    assert rejected(blob(num_samples=value)).rule == "num_samples"


def test_header_checked_before_tensors_are_loaded(monkeypatch):
    import fedfunc.weights as w

    def fail(_):
        raise AssertionError("tensors loaded")

    monkeypatch.setattr(w, "_load_tensors", fail)
    assert rejected(blob({"w": good_arrays()["w"]})).rule == "missing_tensor"
    assert rejected(blob(nonce="x")).rule == "nonce"


def test_read_header_does_not_need_tensor_bytes():
    data = blob()
    (n,) = struct.unpack("<Q", data[:8])
    header, meta = read_header(data[: 8 + n])
    assert set(header) == {"w", "b"} and meta["num_samples"] == "40"
    assert json.loads(data[8:8 + n])["w"]["dtype"] == "F32"


def test_torch_roundtrip():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    arrays = model_to_arrays(a)
    assert arrays["1.num_batches_tracked"].shape == ()
    decoded, _ = decode(encode(arrays))
    load_arrays_into(b, decoded)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), arrays[k])


def test_load_arrays_into_refuses_mismatch():
    m = torch.nn.Linear(4, 3)
    with pytest.raises(RuntimeError, match="bias"):
        load_arrays_into(m, {"weight": np.zeros((3, 4), np.float32)})


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64])
def test_norm_of_other_dtypes(dtype):
    arrays = {"t": np.full(4, 300, dtype)}  # ‖t‖ = 600; its square overflows float16
    data = encode(arrays, META)
    m = ModelManifest.from_arrays(arrays)
    validate_update(data, m, expected=EXPECTED, max_norm=601.0)
    e = rejected(data, m, max_norm=599.0)
    assert e.rule == "norm" and "600" in str(e)


def test_norm_of_a_large_tensor_of_odd_length():
    size = (1 << 20) + 7
    arrays = {"t": np.ones(size, np.float32)}
    m = ModelManifest.from_arrays(arrays)
    bound = np.sqrt(size)
    validate_update(encode(arrays, META), m, expected=EXPECTED, max_norm=bound * (1 + 1e-6))
    assert rejected(encode(arrays, META), m, max_norm=bound * (1 - 1e-4)).rule == "norm"


def test_encode_is_deterministic_whatever_the_metadata_order():
    """Idempotent steps re-encode and compare hashes: the same content must give the same bytes."""
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
    meta = {"run": "r", "round": "1", "silo": "s", "nonce": "n", "num_samples": "5"}
    first = encode(arrays, meta)
    assert all(encode(arrays, dict(reversed(meta.items()))) == first for _ in range(20))
