"""disdiff.inference.unit_usage: field size and L_r gain per unit, against analytic cases."""

import numpy as np
import pytest
import torch
from disdiff_support import BrightnessGrid, make_module, random_images, randomize_shift_output

from disdiff.inference.unit_usage import factor_eta2, measure_unit_usage, unit_usage


def _draws(module, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 1000, (n,), generator=g), torch.randn((n, *module.latent_shape), generator=g),
            torch.randperm(n, generator=g))


@pytest.fixture
def trained_like(ldm_ckpt):
    module = make_module(ldm_ckpt, num_units=3, unit_dim=2).eval()
    randomize_shift_output(module)
    return module


def test_fields_are_zero_at_initialisation_so_every_unit_gains_nothing(ldm_ckpt):
    module = make_module(ldm_ckpt).eval()  # the shift decoder's output layers start at zero (spec)
    x = random_images(6)
    usage = unit_usage(module, x, *_draws(module, 6))
    assert usage.field_rms == [0.0] * module.num_units and usage.gain == [0.0] * module.num_units
    assert all(s > 0 for s in usage.code_std)  # the encoder is not zero: only the fields are


def test_identity_permutation_gains_nothing_and_a_real_one_does(trained_like):
    x = random_images(8)
    t, noise, perm = _draws(trained_like, 8)
    same = unit_usage(trained_like, x, t, noise, torch.arange(8))
    assert same.gain == [0.0] * 3 and all(r > 0 for r in same.field_rms)
    moved = unit_usage(trained_like, x, t, noise, perm)
    assert moved.loss == same.loss and moved.field_rms == same.field_rms
    assert all(g != 0 for g in moved.gain)


def test_a_unit_constant_over_the_images_gains_nothing_however_large_its_field(trained_like, monkeypatch):
    x = random_images(8)
    encode = trained_like.encode_representation

    def constant_unit_1(images):
        z = encode(images).clone()
        z[:, 1] = torch.tensor([3.0, -2.0])  # the same code for every image: nothing to cut by permuting
        return z

    monkeypatch.setattr(trained_like, "encode_representation", constant_unit_1)
    usage = unit_usage(trained_like, x, *_draws(trained_like, 8))
    assert usage.gain[1] == 0.0 and usage.field_rms[1] > 0 and usage.code_std[1] == 0.0
    assert usage.gain[0] != 0.0 and usage.gain[2] != 0.0


def test_loss_is_the_reconstruction_loss_with_every_unit_kept(trained_like):
    x = random_images(5)
    t, noise, perm = _draws(trained_like, 5)
    usage = unit_usage(trained_like, x, t, noise, perm)
    with torch.no_grad():
        out = trained_like.compute_losses(x, t=t, noise=noise)  # the small module has no nested dropout
    assert usage.loss == pytest.approx(float(out["loss_rec"]), rel=1e-6)
    assert usage.field_rms == pytest.approx(out["fields"].pow(2).mean(dim=(0, 2, 3, 4)).sqrt().tolist(), rel=1e-6)


def test_not_a_permutation_is_refused(trained_like):
    x = random_images(4)
    t, noise, _ = _draws(trained_like, 4)
    with pytest.raises(ValueError, match="permutation"):
        unit_usage(trained_like, x, t, noise, torch.tensor([0, 0, 1, 2]))


def test_eta2_names_the_factor_a_unit_follows_and_skips_per_image_factors():
    rng = np.random.RandomState(0)
    factors = np.stack([rng.randint(0, 4, 400), rng.randint(0, 3, 400), np.arange(400)], axis=1)
    codes = np.stack([factors[:, 0] * 1.0, rng.randn(400)], axis=1)[:, :, None]  # (n, N=2, d=1)
    eta2 = factor_eta2(codes, factors)
    assert eta2[0, 0] == pytest.approx(1.0) and eta2[1, 0] < 0.05 and eta2[0, 1] < 0.05
    assert np.isnan(eta2[:, 2]).all()  # one image per value: η² would be ~1 for any code


def test_measure_on_a_dataset_is_seeded_and_names_the_brightness_unit(trained_like, monkeypatch):
    encode = trained_like.encode_representation

    def unit_0_is_brightness(images):
        z = encode(images).clone()
        z[:, 0] = images.mean(dim=(1, 2, 3))[:, None]
        return z

    monkeypatch.setattr(trained_like, "encode_representation", unit_0_is_brightness)
    data = BrightnessGrid()
    a = measure_unit_usage(trained_like, data, n=24, seed=3, batch_size=10)
    b = measure_unit_usage(trained_like, data, n=24, seed=3, batch_size=10)
    assert a.gain == b.gain and a.loss == b.loss
    assert a.record()["n"] == 24 and a.record()["t_range"] == [100, 600] and a.record()["seed"] == 3
    rows = a.rows()
    assert rows[0]["top_factor"] == "brightness" and rows[0]["top_eta2"] > 0.99
    assert max(r["field_share"] for r in rows) == 1.0
    assert rows[0]["eta2"]["nothing"] is None  # 8 values among 24 images: more than n/4, not reported
    # code spread and η² are computed on all the codes, so the batch size does not change them (up to
    # float32 sums in another order)
    c = measure_unit_usage(trained_like, data, n=24, seed=3, batch_size=24)
    assert c.code_std == pytest.approx(a.code_std, rel=1e-4) and np.allclose(c.eta2, a.eta2, atol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="t_range"):
        measure_unit_usage(trained_like, data, n=8, t_range=(600, 100))
