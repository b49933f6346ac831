"""The opt-in L_r term on the eps error's spatial differences: analytic values, invariances, where its
gradient goes, and that it is off in the published training."""

import pytest
import torch
from disdiff_support import assert_gradient_reaches_only_the_trained_parts, losses_with_opt_in_term, make_module

from disdiff.config import ConfigError
from disdiff.diffusion.highpass_loss import highpass_reconstruction_loss, spatial_differences
from disdiff.diffusion.schedule import extract
from disdiff.training.deviations import deviations_in_use


def test_constant_offsets_per_channel_cost_nothing():
    offsets = torch.randn(4, 3, 1, 1).expand(4, 3, 8, 8)  # a colour filling the whole latent
    for loss_type in ("l1", "l2"):
        assert highpass_reconstruction_loss(offsets, loss_type).item() == 0.0


def test_a_ramp_and_a_step_have_their_analytic_values():
    ramp = torch.arange(5.0).view(1, 1, 1, 5).expand(2, 1, 4, 5)  # +1 per column, constant down the rows
    d = spatial_differences(ramp)
    assert d.shape == (2, 3 * 5 + 4 * 4)
    # the 16 differences along W are 1, the 15 along H are 0
    assert highpass_reconstruction_loss(ramp, "l1").item() == pytest.approx(16 / 31)
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = -3.0  # an edge between columns 1 and 2: 4 differences of -3 out of 24
    assert highpass_reconstruction_loss(step, "l1").item() == pytest.approx(4 * 3 / 24)
    assert highpass_reconstruction_loss(step, "l2").item() == pytest.approx(4 * 9 / 24)


def test_the_loss_ignores_constant_offsets_and_the_sign():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 2, 6, 6, generator=g)
    assert highpass_reconstruction_loss(-e, "l1").item() == pytest.approx(highpass_reconstruction_loss(e, "l1").item())
    shifted = e + 5.0
    assert highpass_reconstruction_loss(shifted, "l2").item() == pytest.approx(
        highpass_reconstruction_loss(e, "l2").item(), rel=1e-5)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="B, C, H, W"):
        spatial_differences(torch.zeros(2, 3, 1, 5))
    with pytest.raises(ValueError, match="loss_type"):
        highpass_reconstruction_loss(torch.zeros(1, 1, 2, 2), "huber")


def test_the_term_is_off_by_default_and_reaches_the_shift_decoder_and_the_encoder(ldm_ckpt):
    module, out = losses_with_opt_in_term(ldm_ckpt, "loss_rec_highpass", rec_highpass_weight=2.0)
    coef = extract(module.schedule.shift_coef, out["t"], out["pred"].shape)
    error = out["noise"] - out["pred"] - coef * out["fields"].sum(1)
    expected = highpass_reconstruction_loss(error, "l1")
    assert 0.0 < out["loss_rec_highpass"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item() + 2.0 * expected.item(), rel=1e-6)
    out["loss_rec_highpass"].backward()
    assert_gradient_reaches_only_the_trained_parts(module)


def test_bad_weight_names_the_key_and_the_switch_is_listed(ldm_ckpt):
    with pytest.raises(ConfigError, match="rec_highpass_weight must be >= 0"):
        make_module(ldm_ckpt, rec_highpass_weight=-0.5)
    assert deviations_in_use({"rec_highpass_weight": 1.0}) == {"rec_highpass_weight": 1.0}
    assert deviations_in_use({"rec_highpass_weight": 0.0}) == {}
