"""Stage-1 losses: adaptive weight, VQ/KL loss formulas, hinge discriminator loss, optional LPIPS."""

from __future__ import annotations

import logging

import pytest
import torch

from disdiff.config import ConfigError
from disdiff.models.autoencoder import DiagonalGaussianDistribution
from disdiff.models.autoencoder import lpips as lpips_mod
from disdiff.models.autoencoder.losses import (
    LPIPSWithDiscriminator,
    VQLPIPSWithDiscriminator,
    adopt_weight,
    calculate_adaptive_weight,
    hinge_d_loss,
)


def test_adaptive_weight_toy_case():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    a, b = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])
    nll, g = (w * a).sum(), (w * b).sum()  # gradients a (norm 5) and b (norm 1)
    d = calculate_adaptive_weight(nll, g, w, disc_weight=0.75)
    assert torch.allclose(d, torch.tensor(0.75 * 5.0 / (1.0 + 1e-4)))
    assert not d.requires_grad
    g0 = (w * 0.0).sum()
    assert torch.allclose(calculate_adaptive_weight(nll, g0, w, 1.0), torch.tensor(1e4))  # clamped


def test_hinge_and_adopt_weight():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert torch.allclose(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))
    assert adopt_weight(1.0, 9, threshold=10) == 0.0 and adopt_weight(1.0, 10, threshold=10) == 1.0


def _toy_generator(x):
    w = torch.nn.Parameter(torch.randn(3, 3, 3, 3) * 0.1)
    return torch.nn.functional.conv2d(x, w, padding=1), w


def test_vq_loss_total_formula():
    torch.manual_seed(0)
    loss = VQLPIPSWithDiscriminator(disc_start=0, disc_weight=0.75, codebook_weight=1.0, disc_ndf=8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    xrec, w = _toy_generator(x)
    cb = torch.tensor(0.3)
    total, log = loss(cb, x, xrec, 0, global_step=0, last_layer=w)
    nll = (x - xrec).abs().mean()
    g = -loss.discriminator(xrec).mean()
    d_w = calculate_adaptive_weight(nll, g, w, 0.75)
    assert torch.allclose(total, nll + d_w * g + 0.3, atol=1e-5)
    assert torch.allclose(log["train/d_weight"], d_w, atol=1e-5)
    d_loss, dlog = loss(cb, x, xrec, 1, global_step=0)
    assert torch.allclose(d_loss, hinge_d_loss(loss.discriminator(x), loss.discriminator(xrec.detach())), atol=1e-6)
    assert "train/disc_loss" in dlog


def test_discriminator_inactive_before_disc_start():
    torch.manual_seed(0)
    loss = VQLPIPSWithDiscriminator(disc_start=5, disc_ndf=8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    xrec, w = _toy_generator(x)
    total, log = loss(torch.tensor(0.1), x, xrec, 0, global_step=4, last_layer=w)
    assert torch.allclose(total, (x - xrec).abs().mean() + 0.1)
    assert float(log["train/d_weight"]) == 0.0
    d_loss, _ = loss(torch.tensor(0.1), x, xrec, 1, global_step=4)
    assert float(d_loss) == 0.0 and not d_loss.requires_grad


def test_kl_loss_formula():
    torch.manual_seed(0)
    loss = LPIPSWithDiscriminator(disc_start=50001, kl_weight=1e-6, disc_weight=0.5, disc_ndf=8)
    assert not loss.logvar.requires_grad and float(loss.logvar) == 0.0
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    xrec, w = _toy_generator(x)
    moments = torch.randn(2, 8, 8, 8)
    post = DiagonalGaussianDistribution(moments)
    total, log = loss(post, x, xrec, 0, global_step=0, last_layer=w)
    mean, logvar = moments[:, :4], moments[:, 4:]
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum() / 2
    nll = (x - xrec).abs().sum() / 2
    assert torch.allclose(log["train/kl_loss"], kl, rtol=1e-5)
    assert torch.allclose(total, nll + 1e-6 * kl, rtol=1e-5)
    assert torch.allclose(log["train/rec_loss"], (x - xrec).abs().mean())


def test_lpips_disabled_without_weights_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(lpips_mod, "_WARNED_DISABLED", False)
    with caplog.at_level(logging.WARNING, logger=lpips_mod.__name__):
        a = VQLPIPSWithDiscriminator(disc_start=0, disc_ndf=8)
        b = LPIPSWithDiscriminator(disc_start=0, disc_ndf=8)
    assert a.perceptual_loss is None and b.perceptual_loss is None
    msgs = [r for r in caplog.records if "LPIPS" in r.getMessage()]
    assert len(msgs) == 1 and "disabled" in msgs[0].getMessage()


def test_lpips_bad_path_errors_clearly(tmp_path):
    missing = tmp_path / "nope" / "vgg.pth"
    with pytest.raises(ConfigError, match="vgg.pth"):
        VQLPIPSWithDiscriminator(disc_start=0, disc_ndf=8, lpips_weights=str(missing))
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="garbage.pth"):
        lpips_mod.build_perceptual_loss(str(bad), None)
    heads_only = tmp_path / "heads.pth"
    torch.save({f"lin{i}.model.1.weight": torch.zeros(1, c, 1, 1) for i, c in enumerate(lpips_mod.CHANNELS)}, heads_only)
    with pytest.raises(ConfigError, match="vgg_weights"):
        lpips_mod.build_perceptual_loss(str(heads_only), None)


def test_lpips_from_local_files(tmp_path):
    torch.manual_seed(0)
    trunk = lpips_mod.VGG16Features()
    vgg_path, heads_path = tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.pth"
    torch.save(trunk.state_dict(), vgg_path)  # torchvision layout: features.<i>.weight/bias
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(lpips_mod.CHANNELS)}, heads_path)
    loss = VQLPIPSWithDiscriminator(disc_start=0, disc_ndf=8, lpips_weights=str(heads_path), vgg_weights=str(vgg_path))
    p = loss.perceptual_loss
    assert p is not None and not any(q.requires_grad for q in p.parameters())
    assert torch.equal(p.net.features[28].weight, trunk.features[28].weight)
    loss.train()
    assert not p.training  # stays frozen in eval mode
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    with torch.no_grad():
        same, diff = p(x, x), p(x, y)
    assert same.shape == (2, 1, 1, 1) and torch.allclose(same, torch.zeros_like(same))
    assert (diff > 0).all()
