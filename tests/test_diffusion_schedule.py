"""Closed-form checks of the noise schedule and the forward/posterior maths (spec 1.1)."""

import math

import numpy as np
import pytest
import torch

from disdiff.diffusion.schedule import (
    DiffusionSchedule,
    extract,
    make_beta_schedule,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
)


@pytest.fixture(scope="module")
def sched():
    return DiffusionSchedule()


def test_beta_schedule_kinds():
    lin = make_beta_schedule("linear", 1000, 0.0015, 0.0155)
    assert lin.dtype == np.float64 and lin.shape == (1000,)
    t = np.arange(1000) / 999
    np.testing.assert_allclose(lin, (math.sqrt(0.0015) + (math.sqrt(0.0155) - math.sqrt(0.0015)) * t) ** 2, rtol=1e-12)
    np.testing.assert_allclose(make_beta_schedule("sqrt_linear", 1000, 0.0015, 0.0155), 0.0015 + 0.014 * t, rtol=1e-12)
    np.testing.assert_allclose(make_beta_schedule("sqrt", 1000, 0.0015, 0.0155), np.sqrt(0.0015 + 0.014 * t), rtol=1e-12)
    cos = make_beta_schedule("cosine", 1000)
    assert cos.shape == (1000,) and (cos > 0).all() and (cos <= 0.999).all()
    f = lambda u: math.cos((u / 1000 + 8e-3) / (1 + 8e-3) * math.pi / 2) ** 2  # noqa: E731
    assert cos[0] == pytest.approx(1 - f(1) / f(0), rel=1e-9)
    with pytest.raises(ValueError):
        make_beta_schedule("quadratic")


def test_published_values(sched):
    assert sched.num_timesteps == 1000
    for name in DiffusionSchedule.BUFFER_NAMES:
        buf = getattr(sched, name)
        assert buf.dtype == torch.float32 and buf.shape == (1000,), name
    assert "lvlb_weights" not in sched.state_dict()
    assert sched.betas[0].item() == pytest.approx(0.0015, rel=1e-6)
    assert sched.betas[999].item() == pytest.approx(0.0155, rel=1e-6)
    assert sched.alphas_cumprod[499].item() == pytest.approx(0.151, abs=5e-4)
    assert sched.alphas_cumprod[999].item() == pytest.approx(6.69e-4, rel=2e-3)
    assert sched.sqrt_alphas_cumprod[999].item() == pytest.approx(0.0259, abs=1e-4)
    assert sched.alphas_cumprod_prev[0].item() == 1.0
    assert sched.shift_coef[0].item() == 0.0
    assert sched.shift_coef[500].item() == pytest.approx(-0.918, abs=1e-3)
    assert sched.shift_coef[999].item() == pytest.approx(-0.992, abs=1e-3)
    assert sched.ddim_coef[0].item() == pytest.approx(-math.sqrt(0.0015), rel=1e-5)  # ≈ -0.039
    assert sched.ddim_coef[999].item() == pytest.approx(-0.9997, abs=1e-4)
    assert sched.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(1e-20), rel=1e-6)
    assert sched.lvlb_weights[0].item() == sched.lvlb_weights[1].item()


def test_buffers_match_float64_formulas(sched):
    b = make_beta_schedule("linear", 1000, 0.0015, 0.0155)
    a = 1 - b
    ac = np.cumprod(a)
    acp = np.append(1.0, ac[:-1])
    var = b * (1 - acp) / (1 - ac)
    expected = {
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ac - 1),
        "posterior_variance": var,
        "posterior_mean_coef1": b * np.sqrt(acp) / (1 - ac),
        "posterior_mean_coef2": (1 - acp) * np.sqrt(a) / (1 - ac),
        "shift_coef": -np.sqrt(a) * (1 - acp) / np.sqrt(1 - ac),
        "ddim_coef": -np.sqrt(1 - ac),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(sched, name).double().numpy(), value, rtol=1e-5, atol=1e-7, err_msg=name)
    # shift_coef = -(sqrt(a) sqrt(1-ac) / beta) * posterior variance (PDAE form, spec 1.1)
    np.testing.assert_allclose(expected["shift_coef"], -(np.sqrt(a) * np.sqrt(1 - ac) / b) * var, rtol=1e-10, atol=1e-12)


def test_extract_shape(sched):
    t = torch.tensor([0, 499, 999])
    out = extract(sched.betas, t, (3, 4, 5, 6))
    assert out.shape == (3, 1, 1, 1)
    assert torch.equal(out.flatten(), sched.betas[t])


def test_q_sample_statistics(sched):
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    t = torch.full((n,), 499, dtype=torch.long)
    xt = q_sample(sched, x0, t, torch.randn(x0.shape, generator=g))
    ac = sched.alphas_cumprod[499].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ac) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ac, rel=0.03)


def test_x0_recovered_from_true_eps(sched):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 5, 5, generator=g)
    eps = torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    xt = q_sample(sched, x0, t, eps)
    torch.testing.assert_close(predict_x0_from_eps(sched, xt, t, eps), x0, atol=2e-4, rtol=1e-4)


def test_posterior_by_hand(sched):
    x0 = torch.tensor([[[[1.0]]], [[[-2.0]]]])
    xt = torch.tensor([[[[0.5]]], [[[0.25]]]])
    t = torch.tensor([0, 300])
    mean, var, log_var = q_posterior(sched, x0, xt, t)
    b = make_beta_schedule("linear", 1000, 0.0015, 0.0155)
    ac = np.cumprod(1 - b)
    for i, (ti, a0, at) in enumerate([(0, 1.0, 0.5), (300, -2.0, 0.25)]):
        acp = 1.0 if ti == 0 else ac[ti - 1]
        m = b[ti] * math.sqrt(acp) / (1 - ac[ti]) * a0 + (1 - acp) * math.sqrt(1 - b[ti]) / (1 - ac[ti]) * at
        v = b[ti] * (1 - acp) / (1 - ac[ti])
        assert mean[i].item() == pytest.approx(m, rel=1e-5, abs=1e-7)
        assert var[i].item() == pytest.approx(v, rel=1e-5, abs=1e-12)
        assert log_var[i].item() == pytest.approx(math.log(max(v, 1e-20)), rel=1e-5)
    # at t = 0 the posterior mean is x0 itself
    assert mean[0].item() == pytest.approx(1.0, abs=1e-6)
