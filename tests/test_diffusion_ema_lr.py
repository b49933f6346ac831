"""EMA (LitEma semantics, spec 1.3) and the warm-up multiplier (spec 1.5)."""

import pytest
import torch
from torch import nn

from disdiff.diffusion.ema import EMA
from disdiff.diffusion.lr_schedule import linear_warmup, stepped_up


def make_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    m[0].bias.requires_grad_(False)  # frozen at construction: not shadowed
    return m


def test_ema_warmup_decay_values():
    m = make_model()
    ema = EMA(m, decay=0.9999)
    assert set(ema.param_to_shadow) == {"0.weight", "1.weight", "1.bias"}
    expected = [min(0.9999, (1 + n) / (10 + n)) for n in range(1, 6)]
    assert expected[0] == pytest.approx(2 / 11)
    shadow = m[1].weight.detach().clone()
    for d in expected:
        assert ema.current_decay() == pytest.approx(d)
        with torch.no_grad():
            m[1].weight.add_(1.0)
        shadow = shadow - (1 - d) * (shadow - m[1].weight.detach())
        ema.update(m)
        torch.testing.assert_close(ema.shadow_state_dict()["1.weight"], shadow)
    assert int(ema.num_updates) == 5
    # late in training the cap applies
    ema.num_updates.fill_(10**6)
    assert ema.current_decay() == pytest.approx(0.9999)
    no_warm = EMA(m, decay=0.5, use_warmup=False)
    assert no_warm.current_decay() == 0.5


def test_ema_state_dict_and_swap():
    m = make_model()
    ema = EMA(m, decay=0.9)
    sd = ema.state_dict()
    assert {"decay", "num_updates", "0__weight", "1__weight", "1__bias"} == set(sd)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    ema.update(m)
    live = [p.detach().clone() for p in m.parameters()]
    with ema.average_parameters(m):
        torch.testing.assert_close(m[1].weight, ema.shadow_state_dict()["1.weight"])
        assert not torch.equal(m[1].weight, live[2])
        torch.testing.assert_close(m[0].bias, live[1])  # not shadowed: untouched
    for p, q in zip(m.parameters(), live):
        assert torch.equal(p, q)
    # a fresh EMA restores from the state dict (what a resumed run does)
    other = EMA(make_model(), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert int(other.num_updates) == 1
    torch.testing.assert_close(other.shadow_state_dict()["1.bias"], ema.shadow_state_dict()["1.bias"])
    with pytest.raises(RuntimeError):
        ema.restore(m.parameters())


def test_linear_warmup_values():
    f = linear_warmup(10000)
    assert f(0) == pytest.approx(1e-6)
    assert f(5000) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert f(9999) == pytest.approx(1e-6 + (1 - 1e-6) * 0.9999)
    assert f(10000) == 1.0 and f(10**9) == 1.0
    assert linear_warmup(0)(0) == 1.0
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(4))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2e-6, 2 * (1e-6 + (1 - 1e-6) / 4), 2 * (1e-6 + (1 - 1e-6) / 2), 2 * (1e-6 + (1 - 1e-6) * 0.75), 2.0, 2.0])


def test_stepped_up_multiplies_from_its_step_on():
    f = stepped_up(linear_warmup(4), from_step=2, factor=3.0)
    assert [f(n) for n in range(6)] == pytest.approx([1e-6, 0.25 + 0.75e-6, 3 * (0.5 + 0.5e-6),
                                                      3 * (0.75 + 0.25e-6), 3.0, 3.0])
