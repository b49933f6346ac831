"""Training timesteps: the published uniform draw and the opt-in low-t focus."""

import pytest
import torch

from disdiff.diffusion.timesteps import sample_timesteps


def test_published_draw_is_one_randint_from_the_generator():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    t = sample_timesteps(64, 1000, g1)
    assert torch.equal(t, torch.randint(0, 1000, (64,), generator=g2))
    assert t.dtype == torch.int64


def test_focus_marginal_is_the_documented_mixture():
    g = torch.Generator().manual_seed(0)
    n, T, t_max, fraction = 200_000, 1000, 200, 0.5
    t = sample_timesteps(n, T, g, focus=(t_max, fraction))
    assert int(t.min()) >= 0 and int(t.max()) < T
    expected_low = fraction + (1 - fraction) * t_max / T  # P(t < t_max) = 0.6
    assert abs(float((t < t_max).float().mean()) - expected_low) < 0.005
    # above t_max the density is the uniform part only: (1 - fraction) / T per value
    high = t[t >= t_max]
    assert abs(len(high) / n - (1 - fraction) * (T - t_max) / T) < 0.005


def test_focus_extremes_and_seeds():
    g = torch.Generator().manual_seed(1)
    assert int(sample_timesteps(5000, 1000, g, focus=(50, 1.0)).max()) < 50
    a = sample_timesteps(100, 1000, torch.Generator().manual_seed(7), focus=(300, 0.3))
    b = sample_timesteps(100, 1000, torch.Generator().manual_seed(7), focus=(300, 0.3))
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    zero = sample_timesteps(1000, 1000, g1, focus=(10, 0.0))
    assert float((zero < 10).float().mean()) < 0.05  # only the uniform part: ~1 %
    assert torch.equal(zero, torch.randint(0, 1000, (1000,), generator=g2))  # the uniform draw comes first


@pytest.mark.parametrize("focus", [(0, 0.5), (1001, 0.5), (100, 1.5), (100, -0.1)])
def test_bad_focus_is_rejected(focus):
    with pytest.raises(ValueError, match="focus"):
        sample_timesteps(4, 1000, focus=focus)


def test_stage3_module_draws_its_timesteps_with_the_focus(ldm_ckpt):
    from disdiff_support import make_module, random_images

    from disdiff.config import ConfigError

    x = random_images(8)
    focused = make_module(ldm_ckpt, timestep_focus=[5, 1.0], dis_weight=0.0)
    assert int(focused.compute_losses(x, generator=torch.Generator().manual_seed(0))["t"].max()) < 5
    published = make_module(ldm_ckpt, dis_weight=0.0)
    t = published.compute_losses(x, generator=torch.Generator().manual_seed(0))["t"]
    T = published.schedule.num_timesteps
    assert torch.equal(t, torch.randint(0, T, (8,), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError, match="timestep_focus"):
        make_module(ldm_ckpt, timestep_focus=[T + 1, 0.5])
