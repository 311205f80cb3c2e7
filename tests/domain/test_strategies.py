"""Server strategies over re-readable update sources: the math against direct numpy, order-freedom,
state that survives bytes, counts, the value rules inside the block pass, and the spec at the edge."""
from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
import pytest

from fedfunc.aggregation import (STRATEGIES, FedAdam, FedAvg, FedAvgM, FixedClipping, Krum, MemoryUpdate,
                                 RangeUpdate, State, StateCorrupt, StateError, StateMissing, StrategySpec,
                                 TooFewUpdates, TrimmedMean, decode_state, encode_state, get_strategy)
from fedfunc.aggregation.base import STACK_BYTES
from fedfunc.validation import describe
from fedfunc.weights import ModelManifest, UpdateRejected, encode, validate_update

SHAPES = {"w": (13, 7), "b": (7,)}
META = {"run": "r", "round": "1", "nonce": "n"}


def model(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=s) * scale).astype(np.float32) for k, s in SHAPES.items()}


def updates(n, seed=1, around=None):
    rng = np.random.default_rng(seed)
    base = around or model()
    return [MemoryUpdate(f"silo{i:02d}", int(rng.integers(1, 300)),
                         {k: (v + rng.normal(size=v.shape).astype(np.float32) * 0.1) for k, v in base.items()})
            for i in range(n)]


def stacked(ups, k):
    return np.stack([u.arrays[k].astype(np.float64) for u in ups])


def weighted_mean(ups, k):
    w = np.array([u.num_samples for u in ups], np.float64)
    return np.tensordot(w / w.sum(), stacked(ups, k), axes=1)


def assert_close(out, expected):
    for k in SHAPES:
        assert out[k].dtype == np.float32 and out[k].shape == SHAPES[k]
        np.testing.assert_allclose(out[k], expected[k], rtol=1e-6, atol=1e-6)


# -- the math ----------------------------------------------------------------------------------

def test_fedavg_is_the_sample_weighted_mean():
    g, ups = model(), updates(9)
    assert_close(FedAvg().aggregate_round(g, ups).arrays, {k: weighted_mean(ups, k) for k in SHAPES})


def test_trimmed_mean_and_median_are_coordinatewise_and_unweighted():
    g, ups = model(), updates(10)
    cut = int(0.2 * 10)
    trimmed = {k: np.sort(stacked(ups, k), axis=0)[cut:10 - cut].mean(axis=0) for k in SHAPES}
    assert_close(TrimmedMean(beta=0.2).aggregate_round(g, ups).arrays, trimmed)
    for n in (9, 10):  # odd: the middle value; even: the mean of the two middle values (np.median)
        assert_close(get_strategy("median").aggregate_round(g, ups[:n]).arrays,
                     {k: np.median(stacked(ups[:n], k), axis=0) for k in SHAPES})


def test_krum_keeps_the_updates_closest_to_their_neighbours():
    g = model()
    ups = updates(7)
    far = MemoryUpdate("silo99", 1000, {k: v + 5.0 for k, v in ups[0].arrays.items()})
    flat = [np.concatenate([u.arrays[k].ravel().astype(np.float64) for k in sorted(SHAPES)]) for u in ups + [far]]
    n, f = len(flat), 2
    d = np.array([[np.sum((a - b) ** 2) for b in flat] for a in flat])
    scores = [np.sort(np.delete(d[i], i))[: n - f - 2].sum() for i in range(n)]
    best = int(np.argmin(scores))
    result = Krum(f=f).aggregate_round(g, ups + [far])
    assert result.selected == [(ups + [far])[best].key] and "silo99" not in result.selected
    for k in SHAPES:  # Krum returns the chosen update itself, bit for bit
        np.testing.assert_array_equal(result.arrays[k], (ups + [far])[best].arrays[k])
    multi = Krum(f=f, m=3).aggregate_round(g, ups + [far])
    kept = [u for u in ups if u.key in multi.selected]
    assert len(kept) == 3
    assert_close(multi.arrays, {k: weighted_mean(kept, k) for k in SHAPES})


def _adam_reference(g, rounds, options, kind):
    """The Reddi et al. / Flower formulas, written out once more in float64."""
    x = {k: v.astype(np.float64) for k, v in g.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v = {k: np.zeros_like(a) for k, a in x.items()}
    out = []
    for t, ups in enumerate(rounds, start=1):
        for k in x:
            delta = weighted_mean(ups, k) - x[k]
            if kind == "fedavgm":
                m[k] = options["server_momentum"] * m[k] + (-delta)
                x[k] = x[k] - options["server_learning_rate"] * m[k]
                continue
            b1 = options.get("beta_1", 0.0)
            m[k] = b1 * m[k] + (1 - b1) * delta
            if kind == "fedadam":
                v[k] = options["beta_2"] * v[k] + (1 - options["beta_2"]) * delta ** 2
                eta = options["eta"] * math.sqrt(1 - options["beta_2"] ** (t + 1)) / (1 - b1 ** (t + 1))
            elif kind == "fedyogi":
                v[k] = v[k] - (1 - options["beta_2"]) * delta ** 2 * np.sign(v[k] - delta ** 2)
                eta = options["eta"]
            else:
                v[k] = v[k] + delta ** 2
                eta = options["eta"]
            x[k] = x[k] + eta * m[k] / (np.sqrt(v[k]) + options["tau"])
        out.append({k: a.copy() for k, a in x.items()})
    return out


@pytest.mark.parametrize("name,options", [
    ("fedadam", {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    ("fedyogi", {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    ("fedadagrad", {"eta": 0.1, "tau": 1e-3}),
    ("fedavgm", {"server_learning_rate": 0.7, "server_momentum": 0.9}),
])
def test_server_optimizers_follow_their_formulas_with_state_carried_through_bytes(name, options):
    strategy = get_strategy(name, **options)
    g = model()
    rounds = [updates(5, seed=10 + r) for r in range(4)]
    expected = _adam_reference(g, rounds, options, name)
    blob = encode_state(strategy.initial_state(g), strategy.describe())
    current = g
    for ups, want in zip(rounds, expected):
        result = strategy.aggregate_round(current, ups, decode_state(blob, strategy.describe()))
        assert_close(result.arrays, want)
        blob = encode_state(result.state, strategy.describe())
        current = {k: np.asarray(want[k], np.float32) for k in SHAPES}  # the same global as the reference's
    assert decode_state(blob, strategy.describe()).scalars == {"step": 4}


def test_fedadam_without_bias_correction_uses_plain_eta():
    g, ups = model(), updates(4)
    plain = FedAdam(bias_correction=False, eta=0.1).aggregate_round(g, ups, FedAdam().initial_state(g)).arrays
    for k in SHAPES:
        delta = weighted_mean(ups, k) - g[k]
        m, v = 0.1 * delta, 0.01 * delta ** 2
        np.testing.assert_allclose(plain[k], g[k] + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6, atol=1e-7)


def test_fedavgm_without_momentum_and_fedprox_are_fedavg():
    g, ups = model(), updates(6)
    plain = FedAvg().aggregate_round(g, ups).arrays
    for strategy in (FedAvgM(), get_strategy("fedprox")):
        assert not strategy.stateful
        out = strategy.aggregate_round(g, ups).arrays
        for k in SHAPES:
            np.testing.assert_array_equal(out[k], plain[k])


def test_integer_buffers_take_the_rounded_plain_mean_under_every_strategy():
    g = {**model(), "steps": np.array(10, np.int64)}
    ups = [MemoryUpdate(u.key, u.num_samples, {**u.arrays, "steps": np.array(20 + i, np.int64)})
           for i, u in enumerate(updates(5))]
    for name in STRATEGIES:
        strategy = get_strategy(name)
        out = strategy.aggregate_round(g, ups, strategy.initial_state(g)).arrays
        assert out["steps"].dtype == np.int64 and 20 <= out["steps"] <= 24, name


# -- order, blocks, replay ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_is_bit_for_bit_independent_of_arrival_order_and_block_size(name):
    strategy = get_strategy(name, **({"f": 1} if name == "krum" else {}))
    g, ups = model(), updates(7)
    state = strategy.initial_state(g)
    reference = strategy.aggregate_round(g, ups, state)
    rng = np.random.default_rng(0)
    for block, readers in ((5, 0), (64, 3), (None, 0)):
        shuffled = [ups[i] for i in rng.permutation(len(ups))]
        again = strategy.aggregate_round(g, shuffled, state, block_elems=block, readers=readers)
        assert again.selected == reference.selected
        for k in SHAPES:
            np.testing.assert_array_equal(again.arrays[k], reference.arrays[k])
        for k in reference.state.arrays:
            np.testing.assert_array_equal(again.state.arrays[k], reference.state.arrays[k])


def test_fedavg_is_order_free_even_where_float64_running_sums_are_not():
    """2^60 + 1 − 2^60 in float64: arrival order changes a running sum, not the key-ordered one."""
    g = {"x": np.zeros(1, np.float32)}
    values = [2.0 ** 60, 1.0, -(2.0 ** 60)]
    ups = [MemoryUpdate(f"s{i}", 1, {"x": np.array([v], np.float32)}) for i, v in enumerate(values)]
    streamed = {FedAvg().aggregate(g, [ups[i] for i in order])["x"][0] for order in itertools.permutations(range(3))}
    assert len(streamed) > 1  # the streaming path depends on order here, as its docstring says
    blocked = {FedAvg().aggregate_round(g, [ups[i] for i in order]).arrays["x"][0]
               for order in itertools.permutations(range(3))}
    assert len(blocked) == 1


def test_aggregation_is_pure_the_same_inputs_give_the_same_bits_and_inputs_stay_untouched():
    strategy = FedAdam()
    g, ups = model(), updates(5)
    first = strategy.aggregate_round(g, ups, strategy.initial_state(g))
    g_copy = {k: v.copy() for k, v in g.items()}
    state_copy = {k: v.copy() for k, v in first.state.arrays.items()}
    a = strategy.aggregate_round(g, ups, first.state)
    b = FedAdam().aggregate_round(g, ups, decode_state(encode_state(first.state, strategy.describe()),
                                                       strategy.describe()))
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    for k in a.state.arrays:
        np.testing.assert_array_equal(a.state.arrays[k], b.state.arrays[k])
    for k in g:
        np.testing.assert_array_equal(g[k], g_copy[k])
    for k in state_copy:
        np.testing.assert_array_equal(first.state.arrays[k], state_copy[k])


# -- state -------------------------------------------------------------------------------------

def test_state_bytes_are_canonical_and_roundtrip_arrays_and_scalars():
    state = State({"m/w": np.arange(6, dtype=np.float32).reshape(2, 3), "z": np.array(1.5)}, {"step": 3, "k": "v"})
    who = {"name": "fedadam", "options": {"eta": 0.1}}
    data = encode_state(state, who)
    assert encode_state(State(dict(reversed(state.arrays.items())), dict(reversed(state.scalars.items()))), who) == data
    back = decode_state(data, who)
    assert back.scalars == {"step": 3, "k": "v"}
    np.testing.assert_array_equal(back.arrays["m/w"], state.arrays["m/w"])
    assert back.arrays["z"].shape == ()


def test_missing_corrupt_altered_or_foreign_state_is_an_error_never_a_restart():
    strategy = FedAdam()
    g, ups = model(), updates(4)
    good = encode_state(strategy.aggregate_round(g, ups, strategy.initial_state(g)).state, strategy.describe())
    with pytest.raises(StateMissing, match="missing"):
        decode_state(None, strategy.describe())
    with pytest.raises(StateMissing):
        decode_state(b"", strategy.describe())
    with pytest.raises(StateCorrupt, match="not a readable"):
        decode_state(b"garbage-bytes-not-safetensors", strategy.describe())
    with pytest.raises(StateCorrupt, match="not a readable"):
        decode_state(good[: len(good) // 2], strategy.describe())
    flipped = bytearray(good)
    flipped[-3] ^= 0x40
    with pytest.raises(StateCorrupt, match="sha256"):
        decode_state(bytes(flipped), strategy.describe())
    with pytest.raises(StateError, match="written by"):
        decode_state(good, FedAdam(eta=0.5).describe())
    with pytest.raises(StateMissing, match="fedadam carries state"):
        strategy.aggregate_round(g, ups, None)
    state = decode_state(good, strategy.describe())
    with pytest.raises(StateError, match="missing arrays"):
        strategy.aggregate_round(g, ups, State({k: v for k, v in state.arrays.items() if k != "v/w"}, state.scalars))
    with pytest.raises(StateError, match="model needs float32"):
        strategy.aggregate_round({**g, "b": np.zeros(8, np.float32)}, [], state)
    with pytest.raises(StateError, match="keeps no state"):
        FedAvg().aggregate_round(g, ups, state)


# -- counts, value rules, sources --------------------------------------------------------------

@pytest.mark.parametrize("strategy,n,needed", [(Krum(f=2), 6, 7),
                                               (TrimmedMean(beta=0.2), 4, 5), (get_strategy("median"), 2, 3)])
def test_a_robust_rule_with_too_few_updates_names_itself_and_the_count(strategy, n, needed):
    with pytest.raises(TooFewUpdates, match=rf"{strategy.name} needs at least {needed} updates .*; got {n}"):
        strategy.aggregate_round(model(), updates(n))
    strategy.check_count(needed + 1)
    assert strategy.min_updates() == needed


def test_multi_krum_cannot_keep_more_than_the_trusted_updates():
    with pytest.raises(TooFewUpdates, match=r"krum needs at least 6 updates \(keeping m=5 of the n − f=4 .*got 5"):
        Krum(f=1, m=5).check_count(5)


def _blob(u: MemoryUpdate, **meta) -> bytes:
    return encode(u.arrays, {**META, "silo": u.key, "num_samples": str(u.num_samples), **meta})


def ranged(data: bytes, reads: list | None = None) -> RangeUpdate:
    def read(offset, length):
        if reads is not None:
            reads.append(length)
        return data[offset:offset + length]

    return RangeUpdate(read, len(data), ModelManifest.from_arrays(model()), expected={**META, "silo": _silo(data)})


def _silo(data: bytes) -> str:
    from fedfunc.weights import read_header
    return read_header(data)[1]["silo"]


def test_range_updates_give_the_same_bits_as_validated_in_memory_updates():
    g, ups = model(), updates(6)
    manifest = ModelManifest.from_arrays(g)
    validated = [validate_update(_blob(u), manifest, expected={**META, "silo": u.key}) for u in ups]
    reads: list[int] = []
    from_ranges = [ranged(_blob(u), reads) for u in ups]
    for name in ("fedavg", "trimmed_mean", "median", "krum"):
        a = get_strategy(name).aggregate_round(g, validated).arrays
        b = get_strategy(name).aggregate_round(g, from_ranges, block_elems=16, readers=4).arrays
        for k in SHAPES:
            np.testing.assert_array_equal(a[k], b[k])
    assert max(reads[2 * len(ups):]) == 16 * 4  # after the headers, reads are one block of one tensor


def test_a_failing_read_fails_the_aggregation_with_its_error():
    data = _blob(updates(1)[0])
    calls = []

    def read(offset, length):
        calls.append(offset)
        if len(calls) > 4:
            raise OSError("blob gone")
        return data[offset:offset + length]

    source = RangeUpdate(read, len(data), ModelManifest.from_arrays(model()), expected={**META, "silo": "silo00"})
    for readers in (0, 2):
        calls.clear()
        calls.extend([0, 0])
        with pytest.raises(OSError, match="blob gone"):
            FedAvg().aggregate_round(model(), [source], block_elems=8, readers=readers)


def test_range_update_checks_the_header_rules_when_opened():
    u = updates(1)[0]
    manifest = ModelManifest.from_arrays(model())
    data = _blob(u, round="2")
    with pytest.raises(UpdateRejected) as e:
        RangeUpdate(lambda o, n: data[o:o + n], len(data), manifest, expected={**META, "silo": u.key})
    assert e.value.rule == "round"
    with pytest.raises(UpdateRejected) as e:
        RangeUpdate(lambda o, n: data[o:o + n - 1], len(data), manifest, expected={**META, "silo": u.key})
    assert e.value.rule == "short_read"
    bad = encode({"w": u.arrays["w"]}, {**META, "silo": u.key, "num_samples": "3"})
    with pytest.raises(UpdateRejected) as e:
        RangeUpdate(lambda o, n: bad[o:o + n], len(bad), manifest, expected={**META, "silo": u.key})
    assert e.value.rule == "missing_tensor"


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "trimmed_mean", "krum"])
def test_bad_values_found_in_the_block_pass_are_rejected_and_the_rest_aggregated_exactly(name):
    g, ups = model(), updates(7)
    nan = MemoryUpdate("silo50", 5, {"w": np.full(SHAPES["w"], np.nan, np.float32), "b": ups[0].arrays["b"]})
    far = MemoryUpdate("silo60", 5, {k: v + 100 for k, v in ups[1].arrays.items()})
    strategy = get_strategy(name, **({"f": 1} if name == "krum" else {}))
    state = strategy.initial_state(g)
    clean = strategy.aggregate_round(g, ups, state)
    result = strategy.aggregate_round(g, ups + [nan, far], state, max_norm=50.0)
    assert {k: e.rule for k, e in result.rejected.items()} == {"silo50": "non_finite", "silo60": "norm"}
    assert result.rejected["silo50"].tensor == "w"
    assert result.accepted == [u.key for u in ups] and result.selected == clean.selected
    for k in SHAPES:
        np.testing.assert_array_equal(result.arrays[k], clean.arrays[k])


def test_too_few_left_after_rejections_fails_with_the_count():
    ups = updates(5)
    ups[0] = MemoryUpdate(ups[0].key, 1, {k: np.full_like(v, np.inf) for k, v in ups[0].arrays.items()})
    with pytest.raises(TooFewUpdates, match="trimmed_mean needs at least 5 updates .* got 4"):
        TrimmedMean().aggregate_round(model(), ups)


def test_block_pass_memory_is_blocks_times_updates_not_models_times_updates():
    """20 range-read updates of 1M float32 (4 MB each), read in blocks of 64 KB."""
    size = 1_000_000
    g = {"w": np.zeros(size, np.float32)}
    manifest = ModelManifest.from_arrays(g)
    rng = np.random.default_rng(0)
    blobs = [encode({"w": rng.normal(size=size).astype(np.float32)},
                    {**META, "silo": f"s{i:02d}", "num_samples": "3"}) for i in range(20)]
    for name in ("fedavg", "median"):
        sources = [RangeUpdate(lambda o, n, d=d: d[o:o + n], len(d), manifest, expected={**META, "silo": f"s{i:02d}"})
                   for i, d in enumerate(blobs)]
        tracemalloc.start()
        try:
            get_strategy(name).aggregate_round(g, sources, block_elems=1 << 14)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # The new model, a few blocks per update and the sort stack; holding the updates would be 80 MB.
        assert peak < size * 4 + 4 * 20 * (1 << 14) * 4 + STACK_BYTES, (name, peak)


# -- wrappers and the spec ---------------------------------------------------------------------

def test_clipping_wrapper_scales_each_delta_to_the_norm_before_the_inner_rule():
    g, ups = model(), updates(4)
    big = MemoryUpdate("silo77", 50, {k: v + 3.0 for k, v in g.items()})
    clipped = FixedClipping(FedAvg(), clipping_norm=1.0).aggregate_round(g, ups + [big])
    expected = []
    for u in ups + [big]:
        norm = math.sqrt(sum(np.sum((u.arrays[k].astype(np.float64) - g[k]) ** 2) for k in SHAPES))
        s = min(1.0, 1.0 / norm)
        expected.append(MemoryUpdate(u.key, u.num_samples, {k: g[k] + (u.arrays[k] - g[k].astype(np.float64)) * s
                                                            for k in SHAPES}))
    assert_close(clipped.arrays, {k: weighted_mean(expected, k) for k in SHAPES})
    assert clipped.accepted == [u.key for u in ups + [big]]


def test_spec_accepts_a_name_or_name_options_wrappers_and_fills_defaults():
    assert StrategySpec.model_validate("FedAvg").model_dump() == {"name": "fedavg", "options": {}, "wrappers": []}
    spec = StrategySpec.model_validate({"name": "fedadam", "options": {"eta": 0.01},
                                        "wrappers": [{"name": "clip", "options": {"clipping_norm": 2}}]})
    assert spec.options == {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3, "bias_correction": True}
    strategy = spec.build()
    assert isinstance(strategy, FixedClipping) and isinstance(strategy.inner, FedAdam)
    assert strategy.describe() == spec.model_dump()
    assert strategy.stateful and strategy.needs_individual_updates


@pytest.mark.parametrize("body,message", [
    ({"name": "fedmystery"}, "name: Value error, unknown aggregation strategy 'fedmystery'; known: ['fedadagrad'"),
    ({"name": "fedadam", "options": {"lr": 1}}, "options: Value error, lr: Extra inputs are not permitted"),
    ({"name": "trimmed_mean", "options": {"beta": 0.5}}, "options: Value error, beta: Input should be less than 0.5"),
    ({"name": "krum", "options": {"f": -1}}, "options: Value error, f: Input should be greater than or equal to 0"),
    ({"name": "fedyogi", "options": {"tau": 0}}, "options: Value error, tau: Input should be greater than 0"),
    ({"name": "fedavg", "wrappers": [{"name": "clip"}]}, "wrappers.0.options: Value error, clipping_norm: missing"),
    ({"name": "fedavg", "wrappers": [{"name": "dp"}]}, "wrappers.0.name: Value error, unknown strategy wrapper 'dp'"),
    ({"name": "fedavg", "extra": 1}, "extra: Extra inputs are not permitted"),
])
def test_spec_errors_name_the_strategy_and_option(body, message):
    with pytest.raises(Exception) as e:
        StrategySpec.model_validate(body)
    assert describe(e.value).startswith(message), describe(e.value)


def test_the_edge_can_refuse_what_a_run_cannot_do():
    """What the run's edge reads: the silo count a rule needs, what the bundle must carry, and
    which rules cannot run under secure aggregation."""
    with pytest.raises(TooFewUpdates, match="krum needs at least 7 updates"):
        StrategySpec.model_validate({"name": "krum", "options": {"f": 2}}).build().check_count(5)
    assert get_strategy("fedprox").requires_silo_config == {"proximal_mu"}
    individual = {name for name, cls in STRATEGIES.items() if get_strategy(name).needs_individual_updates}
    assert individual == {"trimmed_mean", "median", "krum"}
    assert FixedClipping(FedAvg(), clipping_norm=1).needs_individual_updates
    assert {n for n in STRATEGIES if get_strategy(n).stateful} == {"fedadam", "fedyogi", "fedadagrad"}
    assert FedAvgM(server_momentum=0.9).stateful
