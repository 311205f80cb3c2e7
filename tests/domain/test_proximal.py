"""FedProx's proximal term: the square is there, the global weights are a copy, and it pulls training
towards the global model (the two known bugs would each make these fail)."""
from __future__ import annotations

import pytest
import torch

from fedfunc.pipeline.proximal import ProximalTerm


def net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_the_term_is_half_mu_times_the_squared_distance_with_its_gradient():
    model, mu = net(), 0.3
    hook = ProximalTerm(mu)
    hook.wrap(model, None, None)
    global_params = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.5 * (i + 1))   # every parameter moves by 0.5·(i + 1)
    sq = sum(float(torch.sum((p.detach() - g) ** 2)) for p, g in zip(model.parameters(), global_params))
    term = hook.term(model)
    assert term.item() == pytest.approx(mu / 2 * sq, rel=1e-6)
    assert term.item() != pytest.approx(mu / 2 * sq ** 0.5, rel=1e-3)   # the square is not dropped
    term.backward()
    for p, g in zip(model.parameters(), global_params):
        torch.testing.assert_close(p.grad, mu * (p.detach() - g))


def test_the_global_weights_are_a_copy_so_the_term_grows_as_training_moves_away():
    model = net()
    hook = ProximalTerm(1.0)
    hook.wrap(model, None, None)
    assert hook.term(model).item() == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert hook.term(model).item() > 1e-4   # aliased global weights would keep it at 0


def test_a_larger_mu_keeps_local_training_closer_to_the_global_model():
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def distance_after(mu):
        model = net()
        start = [p.detach().clone() for p in model.parameters()]
        hook = ProximalTerm(mu) if mu else None
        if hook:
            hook.wrap(model, None, None)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(100):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            (hook.loss(loss, model) if hook else loss).backward()
            opt.step()
        return sum(float(torch.sum((p.detach() - s) ** 2)) for p, s in zip(model.parameters(), start)) ** 0.5

    free, near, nearer = distance_after(0), distance_after(0.5), distance_after(5.0)
    assert free > near > nearer


def test_mu_must_be_positive_and_the_hook_records_itself():
    with pytest.raises(ValueError, match="proximal_mu must be > 0"):
        ProximalTerm(0)
    assert ProximalTerm(0.01).step().wire() == {"name": "proximal", "options": {"mu": 0.01}}
    with pytest.raises(RuntimeError, match="wrap must run before training"):
        ProximalTerm(0.1).term(net())
