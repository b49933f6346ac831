"""Opt-in stochastic code with a KL to N(0, I) (``code_kl_weight``): the KL's definition, the draw,
the encoder's second head, and how stage 3 uses them; default = the published deterministic code."""

import pytest
import torch
from disdiff_support import make_module, random_images, randomize_shift_output

from disdiff.config import ConfigError
from disdiff.models.code_prior import gaussian_kl, reparameterize
from disdiff.models.image_encoder import ImageEncoder


def test_gaussian_kl_matches_the_closed_form_of_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mean, logvar), expected, atol=1e-6)
    assert torch.equal(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))  # the prior itself
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_reparameterize_is_seeded_and_differentiable_in_mean_and_logvar():
    mean = torch.randn(4, 6, requires_grad=True)
    logvar = torch.full((4, 6), -1.0, requires_grad=True)
    a = reparameterize(mean, logvar, torch.Generator().manual_seed(3))
    b = reparameterize(mean, logvar, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    a.sum().backward()
    assert torch.allclose(mean.grad, torch.ones_like(mean)) and logvar.grad.abs().sum() > 0
    # many draws: empirical mean and std are mean and exp(logvar / 2)
    draws = reparameterize(torch.full((20000, 1), 2.0), torch.full((20000, 1), -2.0), torch.Generator().manual_seed(0))
    assert draws.mean().item() == pytest.approx(2.0, abs=0.01) and draws.std().item() == pytest.approx(0.3679, abs=0.01)


@pytest.mark.parametrize("unit_branches", [False, True])
def test_stochastic_encoder_forward_is_the_mean_of_its_distribution(unit_branches):
    enc = ImageEncoder(resolution=16, width=8, num_units=3, unit_dim=2, unit_branches=unit_branches, stochastic=True)
    enc.eval()
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    mean, logvar = enc.encode_distribution(x)
    assert mean.shape == logvar.shape == (5, 6)
    assert torch.equal(enc(x), mean)
    assert torch.allclose(logvar, torch.full_like(logvar, -2.0))  # head starts at the documented log-variance
    with pytest.raises(RuntimeError, match="stochastic"):
        ImageEncoder(resolution=16, width=8, num_units=3, unit_dim=2).encode_distribution(x)


def test_default_is_the_published_deterministic_code(ldm_ckpt):
    module = make_module(ldm_ckpt)
    assert not module.encoder.stochastic
    assert not any("fc_logvar" in k for k in module.state_dict())
    out = module.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    assert "code_kl" not in out


def test_code_kl_adds_the_weighted_kl_and_conditions_on_a_draw(ldm_ckpt):
    module = make_module(ldm_ckpt, code_kl_weight=0.01)
    randomize_shift_output(module)
    module.train()
    x = random_images(4)
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    mean, logvar = module.encoder.encode_distribution(x)
    assert out["code_kl"].item() == pytest.approx(gaussian_kl(mean, logvar).mean().item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((out["loss_rec"] + out["loss_dis"] + 0.01 * out["code_kl"]).item(),
                                               rel=1e-6)
    # the shift decoder saw a draw, not the mean
    assert not torch.allclose(out["z"].flatten(1), mean)
    # the KL's gradient reaches the log-variance head; the head gets none without the KL term
    module.zero_grad()
    out["loss"].backward()
    assert module.encoder.fc_logvar.weight.grad.abs().sum() > 0


def test_code_kl_ramp_and_bad_options(ldm_ckpt):
    module = make_module(ldm_ckpt, code_kl_weight=0.2, code_kl_ramp=[10, 19])

    class _Trainer:
        def __init__(self, step):
            self.global_step = step

    for step, expected in ((0, 0.0), (9, 0.0), (14, 0.1), (19, 0.2), (1000, 0.2)):
        module._trainer = _Trainer(step)
        assert module.current_code_kl_weight() == pytest.approx(expected)
    module._trainer = None
    with pytest.raises(ConfigError, match="code_kl_weight"):
        make_module(ldm_ckpt, code_kl_weight=-1)
    with pytest.raises(ConfigError, match="code_kl_ramp"):
        make_module(ldm_ckpt, code_kl_weight=0.1, code_kl_ramp=[5, "x"])
    with pytest.raises(ConfigError, match="built-in image encoder"):
        make_module(ldm_ckpt, code_kl_weight=0.1, encoder_config={"target": "torch.nn.Identity"})
