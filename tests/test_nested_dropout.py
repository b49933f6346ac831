"""Opt-in unit schedules in L_r: nested dropout over the units (``nested_unit_dropout``) and units that join one by one (``progressive_units``)."""

import pytest
import torch
from disdiff_support import make_module, random_images, randomize_shift_output

import disdiff.models.nested_dropout as nested_dropout
from disdiff.config import ConfigError
from disdiff.diffusion.schedule import extract
from disdiff.models.nested_dropout import nested_unit_mask


def test_mask_rows_are_prefixes_kept_with_the_documented_probabilities():
    mask = nested_unit_mask(60000, 6, 0.5, torch.Generator().manual_seed(0))
    kept = mask.sum(1).long()
    assert torch.equal(mask, (torch.arange(6)[None, :] < kept[:, None]).float())  # a prefix per row
    expected = torch.tensor([1 - 0.5 * k / 6 for k in range(6)])
    assert torch.allclose(mask.mean(0), expected, atol=0.01)
    assert torch.equal(nested_unit_mask(7, 6, 0.0, torch.Generator().manual_seed(1)), torch.ones(7, 6))
    always = nested_unit_mask(60000, 6, 1.0, torch.Generator().manual_seed(2))
    assert always[:, 0].min() == 1 and torch.allclose(always.mean(0), torch.tensor([1 - k / 6 for k in range(6)]),
                                                       atol=0.01)
    a = nested_unit_mask(9, 4, 0.7, torch.Generator().manual_seed(3))
    assert torch.equal(a, nested_unit_mask(9, 4, 0.7, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="probability"):
        nested_unit_mask(2, 3, 1.5)


def test_reconstruction_sums_only_the_kept_units(ldm_ckpt, monkeypatch):
    module = make_module(ldm_ckpt, nested_unit_dropout=1.0, dis_weight=0.0)
    randomize_shift_output(module)
    fixed = torch.tensor([[1.0, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]])  # the test module has 3 units
    monkeypatch.setattr(nested_dropout, "nested_unit_mask", lambda *args, **kwargs: fixed)
    x = random_images(4)
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    coef = extract(module.schedule.shift_coef, out["t"], out["z_t"].shape)
    kept = (out["fields"] * fixed.view(4, 3, 1, 1, 1)).sum(1)
    expected = (out["noise"] - (out["pred"] + coef * kept)).abs().flatten(1).mean(1).mean()
    assert out["loss_rec"].item() == pytest.approx(expected.item(), rel=1e-6)
    everything = (out["noise"] - (out["pred"] + coef * out["fields"].sum(1))).abs().flatten(1).mean(1).mean()
    assert abs(out["loss_rec"].item() - everything.item()) > 1e-6  # the truncation changed the loss


def test_dropped_units_get_no_reconstruction_gradient(ldm_ckpt, monkeypatch):
    module = make_module(ldm_ckpt, nested_unit_dropout=1.0, dis_weight=0.0)
    randomize_shift_output(module)
    only_first = torch.zeros(4, 3)
    only_first[:, 0] = 1
    monkeypatch.setattr(nested_dropout, "nested_unit_mask", lambda *args, **kwargs: only_first)
    module.train()
    out = module.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    z = out["z"]
    grad = torch.autograd.grad(out["loss_rec"], z)[0]  # (B, N, d)
    assert grad[:, 0].abs().sum() > 0 and grad[:, 1:].abs().sum() == 0


def test_default_is_the_published_reconstruction_and_bad_probability_is_a_config_error(ldm_ckpt):
    base = make_module(ldm_ckpt)
    x = random_images(4)
    out = base.compute_losses(x, generator=torch.Generator().manual_seed(0))
    coef = extract(base.schedule.shift_coef, out["t"], out["z_t"].shape)
    full = (out["noise"] - (out["pred"] + coef * out["fields"].sum(1))).abs().flatten(1).mean(1).mean()
    assert out["loss_rec"].item() == pytest.approx(full.item(), rel=1e-7)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="nested_unit_dropout"):
            make_module(ldm_ckpt, nested_unit_dropout=bad)


def test_progressive_units_join_one_by_one(ldm_ckpt):
    """Opt-in progressive_units = T: unit k takes part in L_r and in the disentangling loss's choice
    of unit only from step k·T on; before that its code gets no gradient."""
    module = make_module(ldm_ckpt, progressive_units=10)
    randomize_shift_output(module)
    module.train()

    class _Trainer:
        def __init__(self, step):
            self.global_step = step

    for step, active in ((0, 1), (9, 1), (10, 2), (25, 3), (1000, 3)):
        module._trainer = _Trainer(step)
        assert module.active_units() == active
    module._trainer = _Trainer(12)  # units 0 and 1
    out = module.compute_losses(random_images(8), generator=torch.Generator().manual_seed(0))
    assert int(out["concept"].max()) <= 1
    coef = extract(module.schedule.shift_coef, out["t"], out["z_t"].shape)
    expected = (out["noise"] - (out["pred"] + coef * out["fields"][:, :2].sum(1))).abs().flatten(1).mean(1).mean()
    assert out["loss_rec"].item() == pytest.approx(expected.item(), rel=1e-6)
    grad = torch.autograd.grad(out["loss"], out["z"])[0]
    assert grad[:, :2].abs().sum() > 0 and grad[:, 2:].abs().sum() == 0
    module._trainer = None
    assert make_module(ldm_ckpt).active_units() == 3  # default: every unit from the start
    for bad in (-1, 2.5):
        with pytest.raises(ConfigError, match="progressive_units"):
            make_module(ldm_ckpt, progressive_units=bad)
