"""The silo-side transform chain: what each transform does to an update, the order the chain runs in,
the history it records, and the orchestrator's check of that history against the signed bundle."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedfunc.aggregation import DeltaUpdate, FedAvg, MemoryUpdate, Median
from fedfunc.pipeline import (SiloSide, Step, TransformError, TransformSpec, Update, chain, check_history, clipped,
                              default_clip_norm, from_metadata, to_metadata)
from fedfunc.pipeline.clip import Clip
from fedfunc.weights import UpdateRejected


def model(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(6, 5)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32),
            "steps": np.array(10, np.int64)}


def trained(g, scale, seed=1):
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.normal(size=v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v + 3
            for k, v in g.items()}


def run(update, *specs, own=()):
    for t in chain([TransformSpec.model_validate(s) for s in own], [TransformSpec.model_validate(s) for s in specs]):
        update = t(update)
    return update


def distance(arrays, g):
    return math.sqrt(sum(float(np.sum((arrays[k].astype(np.float64) - g[k]) ** 2)) for k in g if g[k].dtype.kind == "f"))


def test_clip_scales_the_distance_from_the_global_model_down_to_the_bound_and_records_it():
    g = model()
    w = trained(g, 1.0)
    norm = distance(w, g)
    out = run(Update(w, g), {"name": "clip", "options": {"max_norm": norm / 4}})
    assert norm / 4 * (1 - 1e-5) <= distance(out.arrays, g) <= norm / 4
    direction = (out.arrays["w"].astype(np.float64) - g["w"]) / (w["w"].astype(np.float64) - g["w"])
    np.testing.assert_allclose(direction, 0.25, rtol=1e-3)
    assert out.arrays["steps"] == w["steps"] and out.arrays["w"].dtype == np.float32
    assert out.history == (Step("clip", {"max_norm": norm / 4}, {"clipped": True}),) and clipped(list(out.history))
    same = run(Update(w, g), {"name": "clip", "options": {"max_norm": norm * 2}})
    assert same.arrays is w and same.history[0].observed == {"clipped": False} and not clipped(list(same.history))


def test_clip_lands_at_or_under_the_bound_in_float32_for_any_scale():
    g = model()
    for seed in range(20):
        w = trained(g, 10.0 ** (seed % 5 - 2), seed)
        bound = distance(w, g) * 0.37
        assert Clip.norm(run(Update(w, g), {"name": "clip", "options": {"max_norm": bound}})) <= bound


def test_delta_then_clip_is_what_the_server_reads_back_as_weights():
    g = model()
    w = trained(g, 1.0)
    out = run(Update(w, g), {"name": "delta"}, {"name": "clip", "options": {"max_norm": 1.0}})
    assert out.kind == "delta" and [s.name for s in out.history] == ["delta", "clip"]
    assert math.isclose(math.sqrt(sum(float(np.sum(out.arrays[k].astype(np.float64) ** 2)) for k in ("w", "b"))),
                        1.0, rel_tol=1e-5)
    as_weights = DeltaUpdate(MemoryUpdate("s", 1, out.arrays), g)
    back = {k: as_weights.read(k, 0, g[k].size).reshape(g[k].shape) for k in g}
    assert back["steps"] == w["steps"]
    assert distance(back, g) == pytest.approx(1.0, rel=1e-5)


def test_every_strategy_aggregates_a_delta_payload_as_the_weights_it_stands_for():
    g = model()
    ws = [trained(g, 0.5, seed) for seed in range(5)]
    deltas = [run(Update(w, g), {"name": "delta"}).arrays for w in ws]
    for strategy in (FedAvg(), Median()):
        plain = strategy.aggregate_round(g, [MemoryUpdate(f"s{i}", 10 + i, w) for i, w in enumerate(ws)]).arrays
        via = strategy.aggregate_round(g, [DeltaUpdate(MemoryUpdate(f"s{i}", 10 + i, d), g)
                                           for i, d in enumerate(deltas)]).arrays
        for k in g:
            np.testing.assert_allclose(via[k], plain[k], rtol=1e-6, atol=1e-6)


def test_the_silo_own_transforms_run_first_and_kinds_must_follow():
    g = model()
    out = run(Update(trained(g, 1.0), g), {"name": "clip", "options": {"max_norm": 0.5}}, own=[{"name": "delta"}])
    assert [s.name for s in out.history] == ["delta", "clip"] and out.kind == "delta"
    with pytest.raises(TransformError, match="transform delta takes a weights payload, not delta"):
        chain([TransformSpec(name="delta")], [TransformSpec(name="delta")])


@pytest.mark.parametrize("spec, message", [
    ({"name": "dp_magic"}, "unknown update transform 'dp_magic'; known: ['clip', 'delta']"),
    ({"name": "clip"}, "transform clip: max_norm: missing"),
    ({"name": "clip", "options": {"max_norm": -1}}, "max_norm: Input should be greater than 0"),
    ({"name": "clip", "options": {"max_norm": 1, "norm_type": 1}}, "norm_type: Extra inputs are not permitted"),
])
def test_a_transform_spec_names_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TransformSpec.model_validate(spec)


def test_history_travels_in_the_metadata_and_is_parsed_strictly():
    g = model()
    out = run(Update(trained(g, 1.0), g), {"name": "delta"}, {"name": "clip", "options": {"max_norm": 0.5}})
    assert from_metadata(to_metadata(out)) == ("delta", list(out.history))
    assert from_metadata({}) == ("weights", [])
    for meta, why in [({"payload": "zipped"}, "payload 'zipped'"), ({"transforms": "{"}, "not JSON"),
                      ({"transforms": json.dumps([{"name": "exfiltrate"}])}, "unknown transform 'exfiltrate'"),
                      ({"transforms": json.dumps([{"name": "clip", "options": {"max_norm": [1, 2]}}])}, "options"),
                      ({"transforms": json.dumps([{"name": "clip", "note": "x"}])}, "step 0 is not"),
                      ({"transforms": "[" + ",".join(['{"name":"delta"}'] * 40) + "]"}, "at most 32 steps")]:
        with pytest.raises(UpdateRejected, match=why) as e:
            from_metadata(meta)
        assert e.value.rule == "transforms"


SIDE = SiloSide(proximal_mu=0.01, transforms=[{"name": "delta"}, {"name": "clip", "options": {"max_norm": 2.0}}])


@pytest.mark.parametrize("kind, steps, rule, says", [
    ("delta", [("proximal", {"mu": 0.01}), ("delta", {}), ("clip", {"max_norm": 2.0})], None, None),
    ("delta", [("proximal", {"mu": 0.01}), ("clip", {"max_norm": 0.5}), ("delta", {}), ("clip", {"max_norm": 2.0})],
     None, None),   # the silo's own clip ran first
    ("delta", [("delta", {}), ("clip", {"max_norm": 2.0})], "transforms.missing", "requires proximal(mu=0.01)"),
    ("delta", [("proximal", {"mu": 0.01}), ("delta", {})], "transforms.missing", "requires [delta, clip(max_norm=2.0)] last, in order"),
    ("weights", [("proximal", {"mu": 0.01}), ("clip", {"max_norm": 2.0})], "transforms.missing", "requires [delta"),
    ("delta", [("proximal", {"mu": 0.01}), ("delta", {}), ("clip", {"max_norm": 9.0})], "transforms.missing",
     "history is [proximal(mu=0.01), delta, clip(max_norm=9.0)]"),
    ("delta", [("proximal", {"mu": 0.1}), ("delta", {}), ("clip", {"max_norm": 2.0})], "transforms.missing", "proximal"),
    ("weights", [("proximal", {"mu": 0.01}), ("delta", {}), ("clip", {"max_norm": 2.0})], "transforms.payload",
     "payload weights, but the history"),
])
def test_the_orchestrator_checks_the_history_against_the_signed_bundle(kind, steps, rule, says):
    history = [Step(n, o) for n, o in steps]
    if rule is None:
        check_history(kind, history, SIDE)
        return
    with pytest.raises(UpdateRejected) as e:
        check_history(kind, history, SIDE)
    assert e.value.rule == rule and says in str(e.value), str(e.value)


def test_a_masked_payload_needs_secure_aggregation_and_a_bundle_without_silo_side_requires_nothing():
    with pytest.raises(UpdateRejected, match="masked payload needs secure aggregation"):
        check_history("masked", [], SiloSide())
    check_history("weights", [], SiloSide())


def test_default_clip_norm_is_ten_times_the_initial_model_norm_with_a_floor():
    g = model()
    norm, how = default_clip_norm(g)
    assert norm == pytest.approx(10 * distance(g, {k: np.zeros_like(v) for k, v in g.items()}))
    assert how.startswith("10 × ‖initial model‖₂")
    zero, how = default_clip_norm({"w": np.zeros(400, np.float32)})
    assert zero == pytest.approx(0.1 * 20) and "near zero" in how
