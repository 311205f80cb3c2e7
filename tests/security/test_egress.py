"""Egress: only update.safetensors, numeric metrics.json and the evaluation figures leave, each checked;
refusals name rule and object."""
import json

import numpy as np
import pytest

from fedfunc import layout
from fedfunc.evaluation import EvalFigures
from fedfunc.security import Refused
from fedfunc.security.egress import check_egress, check_metrics
from fedfunc.weights import ModelManifest, encode

GLOBAL = {"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}
MANIFEST = ModelManifest.from_arrays(GLOBAL)
EXPECTED = {"run": "r", "round": 1, "silo": "alpha", "nonce": "n"}
META = {"run": "r", "round": "1", "silo": "alpha", "nonce": "n", "num_samples": "10"}
CLASSES = 3
FIGURES = EvalFigures(5, 2.5, np.array([[2, 0, 0], [1, 1, 0], [0, 0, 1]], np.int64))


def evaluation(figures: EvalFigures = FIGURES, **meta) -> bytes:
    return figures.encode({k: v for k, v in {**META, **meta}.items() if k != "num_samples"})


def artifacts(update=None, metrics=None, **extra) -> dict[str, bytes]:
    return {layout.UPDATE: update if update is not None else encode({k: v + 1 for k, v in GLOBAL.items()}, META),
            layout.METRICS: metrics if metrics is not None else json.dumps({"loss": 0.5, "num_samples": 10}).encode(),
            layout.EVALUATION: evaluation(), **extra}


def check(arts, mode="train"):
    check_egress(arts, mode=mode, manifest=MANIFEST, num_classes=CLASSES, expected=EXPECTED)


def _refused(rule, arts, obj_part=None, mode="train") -> Refused:
    with pytest.raises(Refused) as e:
        check(arts, mode)
    assert e.value.rule == rule, str(e.value)
    if obj_part:
        assert obj_part in e.value.object
    return e.value


def test_allowed_artifacts_pass():
    check(artifacts())
    check({layout.EVALUATION: evaluation()}, mode="evaluate")


def test_any_other_file_or_a_missing_one_is_refused():
    _refused("egress.artifact_name", artifacts(**{"data.csv": b"1,2,3"}), "data.csv")
    only_update = artifacts()
    del only_update[layout.METRICS]
    _refused("egress.artifact_name", only_update, layout.METRICS)
    _refused("egress.artifact_name", artifacts(), layout.UPDATE, mode="evaluate")  # an evaluate-only job sends no update


@pytest.mark.parametrize("blob, rule", [
    (evaluation(EvalFigures(5, 2.5, np.eye(2, dtype=np.int64) * 2)), "egress.evaluation.shape"),  # 2 classes, not 3
    (evaluation(EvalFigures(6, 2.5, FIGURES.confusion)), "egress.evaluation.confusion"),           # counts disagree
    (evaluation(EvalFigures(5, -1.0, FIGURES.confusion)), "egress.evaluation.loss_sum"),
    (evaluation(EvalFigures(5, float("nan"), FIGURES.confusion)), "egress.evaluation.loss_sum"),
    (evaluation(EvalFigures(5, 2.5, FIGURES.confusion * -1)), "egress.evaluation.confusion"),
    (evaluation(silo="beta"), "egress.evaluation.silo"),
    (evaluation(nonce="old"), "egress.evaluation.nonce"),
    (encode({"num_examples": np.array(5), "loss_sum": np.array(2.5), "confusion": FIGURES.confusion,
             "x_test": np.zeros((5, 64), np.float32)}, {**META, "kind": "evaluation"}), "egress.evaluation.tensors"),
    (b"\x00" * 10**6, "egress.evaluation.size"),
])
def test_evaluation_is_three_bounded_numeric_tensors_bound_to_the_job(blob, rule):
    _refused(rule, artifacts(**{layout.EVALUATION: blob}), layout.EVALUATION)


@pytest.mark.parametrize("metrics", [
    {"loss": "0.5", "num_samples": 10},          # a string could carry anything
    {"loss": float("nan"), "num_samples": 10},
    {"loss": True, "num_samples": 10},
    {"Loss Value": 0.5, "num_samples": 10},
    {"loss": [0.1, 0.2], "num_samples": 10},
    {"loss": 0.5},
    {"loss": 0.5, "num_samples": 0},
    {f"m{i}": 1 for i in range(40)} | {"num_samples": 1},
])
def test_metrics_must_be_a_small_flat_map_of_finite_numbers(metrics):
    _refused("egress.metrics_schema", artifacts(metrics=json.dumps(metrics).encode()), layout.METRICS)


def test_metrics_size_and_json():
    _refused("egress.metrics_schema", artifacts(metrics=b"x" * 5000))
    _refused("egress.metrics_schema", artifacts(metrics=b"not json"))
    assert check_metrics(b'{"loss": 1.5, "num_samples": 3}') == {"loss": 1.5, "num_samples": 3}


@pytest.mark.parametrize("update, rule, tensor", [
    (encode({"w": np.zeros((4, 3), np.float32)}, META), "egress.update.missing_tensor", "b"),
    (encode({**GLOBAL, "x_train": np.zeros((5, 64), np.float32)}, META), "egress.update.extra_tensor", "x_train"),
    (encode({**GLOBAL, "w": np.zeros((4, 4), np.float32)}, META), "egress.update.shape", "w"),
    (encode({**GLOBAL, "w": np.zeros((4, 3), np.float64)}, META), "egress.update.dtype", "w"),
    (encode({**GLOBAL, "b": np.array([0, np.inf, 0], np.float32)}, META), "egress.update.non_finite", "b"),
    (encode(GLOBAL, {**META, "silo": "beta"}), "egress.update.silo", None),
    (encode(GLOBAL, {**META, "nonce": "old"}), "egress.update.nonce", None),
    (b"\x00" * (MANIFEST.nbytes + (1 << 20) + 1), "egress.update.size", None),
    (b"PK\x03\x04 pickle or zip", "egress.update.not_safetensors", None),
])
def test_update_is_validated_against_the_global_manifest(update, rule, tensor):
    err = _refused(rule, artifacts(update=update), layout.UPDATE)
    if tensor:
        assert repr(tensor) in err.object


def test_counts_must_agree():
    _refused("egress.num_samples", artifacts(metrics=json.dumps({"loss": 0.5, "num_samples": 11}).encode()))
