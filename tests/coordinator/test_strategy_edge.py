"""Where a run's strategy is checked before it starts: the silo count a rule needs, the silo-side
settings it needs from the signed bundle, and the CLI that only sets server-side options."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedfunc.aggregation import StrategySpec


@pytest.mark.parametrize("strategy, silos, config, error", [
    ({"name": "krum", "options": {"f": 1}}, 4, {}, "strategy: krum needs at least 5 updates (f=1 Byzantine updates "
                                                    "need n ≥ 2f + 3); got 4 — the run has 4 silo(s)"),
    ("median", 2, {}, "strategy: median needs at least 3 updates"),
    ({"name": "trimmed_mean", "options": {"beta": 0.2}}, 4, {}, "strategy: trimmed_mean needs at least 5 updates"),
    ("fedprox", 5, {}, "strategy: fedprox runs proximal_mu in the silos, so the signed bundle must set "
                       "proximal_mu > 0 (it has None); sign it with `fedfunc sign --proximal-mu`"),
    ("fedprox", 5, {"proximal_mu": 0}, "(it has 0)"),
])
def test_the_edge_refuses_a_strategy_the_run_cannot_use(strategy, silos, config, error):
    with pytest.raises(ValueError) as e:
        StrategySpec.model_validate(strategy).check_run(silos, config)
    assert error in str(e.value)


def test_the_edge_accepts_what_the_run_can_use():
    assert StrategySpec.model_validate({"name": "krum", "options": {"f": 1}}).check_run(5, {}).name == "krum"
    assert StrategySpec.model_validate("fedprox").check_run(1, {"proximal_mu": 0.01}).name == "fedprox"


def test_run_start_sets_only_the_server_strategy_of_the_spec(tmp_path, monkeypatch):
    import fedfunc.run_cli as run_cli
    from fedfunc.cli import _register, app

    sent = []
    monkeypatch.setenv("FEDFUNC_API_KEY", "k")
    monkeypatch.setattr(run_cli, "call", lambda method, host, key, path, body=None: sent.append(body) or {"run": "r"})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"task": "digits", "bundle": {"signed": True},
                                "strategy": {"name": "fedadam", "options": {"eta": 0.01}}}))
    _register()
    runner = CliRunner()
    ok = runner.invoke(app, ["run", "start", str(spec), "--strategy-option", "beta_1=0.5",
                             "--strategy-option", "bias_correction=false"])
    assert ok.exit_code == 0, ok.output
    assert sent[-1]["strategy"] == {"name": "fedadam", "options": {"eta": 0.01, "beta_1": 0.5, "bias_correction": False}}
    assert sent[-1]["bundle"] == {"signed": True}
    other = runner.invoke(app, ["run", "start", str(spec), "--strategy", "krum", "--strategy-option", "f=1"])
    assert other.exit_code == 0, other.output
    assert sent[-1]["strategy"] == {"name": "krum", "options": {"f": 1}, "wrappers": []}
    bad = runner.invoke(app, ["run", "start", str(spec), "--strategy-option", "eta"])
    assert bad.exit_code != 0 and "expected KEY=VALUE" in bad.output
