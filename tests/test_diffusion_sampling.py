"""DDIM / DDPM samplers (spec 3.4) against closed forms on toy data distributions."""

import math

import numpy as np
import pytest
import torch

from disdiff.diffusion.sampling import ddim_sample, ddim_timesteps, ddpm_sample
from disdiff.diffusion.schedule import DiffusionSchedule


@pytest.fixture(scope="module")
def sched():
    return DiffusionSchedule()


def point_mass_eps(sched, c):
    """Exact ε for data concentrated at x0 = c: ε = (x_t − √ᾱ c)/√(1−ᾱ)."""

    def eps_fn(x, t, coef):
        ac = sched.alphas_cumprod[t].reshape(-1, *([1] * (x.dim() - 1)))
        return (x - ac.sqrt() * c) / (1 - ac).sqrt()

    return eps_fn


def gaussian_eps(sched, s2):
    """Exact ε for data x0 ~ N(0, s2): ε = √(1−ᾱ) x_t / (ᾱ s2 + 1 − ᾱ)."""

    def eps_fn(x, t, coef):
        ac = sched.alphas_cumprod[t].reshape(-1, *([1] * (x.dim() - 1))).double()
        return ((1 - ac).sqrt() * x.double() / (ac * s2 + 1 - ac)).to(x.dtype)

    return eps_fn


def test_ddim_timesteps():
    tau = ddim_timesteps(200, 1000)
    assert len(tau) == 200 and tau[0] == 1 and tau[1] == 6 and tau[-1] == 996
    np.testing.assert_array_equal(tau, np.arange(0, 1000, 5) + 1)
    assert ddim_timesteps(50, 1000)[-1] == 981
    full = ddim_timesteps(1000, 1000)
    assert full[0] == 0 and full[-1] == 999
    for s in (3, 7, 333, 999):
        tau = ddim_timesteps(s, 1000)
        assert len(tau) == s and tau.max() <= 999
    with pytest.raises(ValueError):
        ddim_timesteps(0, 1000)


def test_ddim_eta0_deterministic_and_exact_on_point_mass(sched):
    c = 0.3
    x_T = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    a = ddim_sample(point_mass_eps(sched, c), sched, x_T.shape, steps=20, eta=0.0, x_T=x_T)
    b = ddim_sample(point_mass_eps(sched, c), sched, x_T.shape, steps=20, eta=0.0, x_T=x_T.clone())
    assert torch.equal(a, b)
    # With the exact ε, x̂0 = c at every step and ε̂ stays equal to the ε of x_T, so the output is
    # the point noised to ᾱ[0] (a_prev,0 = ᾱ[0], not 1): √ᾱ0·c + √(1−ᾱ0)·ε_T.
    a_T = sched.alphas_cumprod[int(ddim_timesteps(20)[-1])].double()
    eps_T = (x_T.double() - a_T.sqrt() * c) / (1 - a_T).sqrt()
    a0 = sched.alphas_cumprod[0].double()
    torch.testing.assert_close(a.double(), a0.sqrt() * c + (1 - a0).sqrt() * eps_T, atol=1e-5, rtol=0)


def test_ddim_eta1_generator_reproducible(sched):
    eps_fn = point_mass_eps(sched, 0.0)
    shape = (3, 1, 4, 4)
    a = ddim_sample(eps_fn, sched, shape, steps=10, eta=1.0, generator=torch.Generator().manual_seed(7))
    b = ddim_sample(eps_fn, sched, shape, steps=10, eta=1.0, generator=torch.Generator().manual_seed(7))
    c = ddim_sample(eps_fn, sched, shape, steps=10, eta=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddim_coef_and_timesteps_passed_to_model(sched):
    seen = []

    def eps_fn(x, t, coef):
        seen.append((t.clone(), coef.clone()))
        return torch.zeros_like(x)

    ddim_sample(eps_fn, sched, (2, 1, 2, 2), steps=5, eta=0.0, x_T=torch.zeros(2, 1, 2, 2))
    tau = ddim_timesteps(5, 1000)[::-1]
    assert [int(t[0]) for t, _ in seen] == list(tau)
    for (t, coef), ti in zip(seen, tau):
        assert coef.shape == (2, 1, 1, 1)
        assert coef[0].item() == pytest.approx(-math.sqrt(1 - sched.alphas_cumprod[ti].item()), rel=1e-5)
    seen.clear()
    ddim_sample(eps_fn, sched, (2, 1, 2, 2), steps=5, eta=0.0, x_T=torch.zeros(2, 1, 2, 2), guidance_coef="shift")
    assert seen[0][1][0].item() == pytest.approx(sched.shift_coef[int(tau[0])].item())
    with pytest.raises(ValueError):
        ddim_sample(eps_fn, sched, (2, 1, 2, 2), steps=5, guidance_coef="bogus")


def ddim_gaussian_variance(sched, s2, steps, eta):
    """Exact output variance of DDIM (spec 3.4 update) on x0 ~ N(0, s2) with x_T ~ N(0, 1).

    Every step is linear: ε̂ = k·x with k = √(1−a)/(a·s2 + 1 − a), x ← A·x + σ·n.
    """
    ac = sched.alphas_cumprod.double().numpy()
    tau = ddim_timesteps(steps)
    var = 1.0
    for i in reversed(range(len(tau))):
        a = ac[tau[i]]
        ap = ac[tau[i - 1]] if i > 0 else ac[0]
        sig = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
        k = math.sqrt(1 - a) / (a * s2 + 1 - a)
        A = math.sqrt(ap) * (1 - math.sqrt(1 - a) * k) / math.sqrt(a) + math.sqrt(1 - ap - sig**2) * k
        var = A * A * var + sig**2
    return var


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_gaussian_closed_form(sched, eta):
    s2 = 0.25
    g = torch.Generator().manual_seed(3)
    out = ddim_sample(gaussian_eps(sched, s2), sched, (8000, 1, 1, 1), steps=50, eta=eta, generator=g)
    expected = ddim_gaussian_variance(sched, s2, 50, eta)
    assert out.mean().item() == pytest.approx(0.0, abs=0.03)
    assert out.var().item() == pytest.approx(expected, rel=0.06)
    # few big steps under-disperse; the update converges to the data variance as S -> T
    assert ddim_gaussian_variance(sched, s2, 1000, eta) == pytest.approx(s2, rel=0.02)


def test_ddpm_matches_gaussian_marginal_and_coef_choice(sched):
    s2 = 0.25
    seen = {}

    base = gaussian_eps(sched, s2)

    def eps_fn(x, t, coef):
        seen.setdefault(int(t[0]), coef[0].item())
        return base(x, t, coef)

    out = ddpm_sample(eps_fn, sched, (4000, 1, 1, 1), generator=torch.Generator().manual_seed(4))
    assert out.var().item() == pytest.approx(s2, rel=0.08)
    assert seen[500] == pytest.approx(sched.ddim_coef[500].item())  # published behaviour (spec 9.5)
    seen.clear()
    ddpm_sample(eps_fn, sched, (2, 1, 1, 1), shift_coefficient="shift")
    assert seen[500] == pytest.approx(sched.shift_coef[500].item())


def test_ddpm_point_mass_ends_at_data(sched):
    c = -0.4
    out = ddpm_sample(point_mass_eps(sched, c), sched, (3, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.full_like(out, c), atol=1e-3, rtol=0)
