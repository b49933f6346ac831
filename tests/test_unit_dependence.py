"""The opt-in penalty on dependence between units: analytic values and invariances; and, for both unit
penalties (dependence and correlation), where their gradient goes and when they apply."""

import pytest
import torch
from disdiff_support import make_module, random_images

from disdiff.config import ConfigError
from disdiff.models.unit_decorrelation import cross_unit_correlation
from disdiff.models.unit_dependence import cross_unit_dependence, unit_pair_cka


def _uniform(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_copies_score_one_and_independent_units_sit_at_the_finite_batch_level():
    u = _uniform(256, 0)
    copies = torch.stack([u, -3.0 * u + 2.0, 0.5 * u], dim=1)  # copies up to sign, scale and shift
    assert cross_unit_dependence(copies).item() == pytest.approx(1.0, abs=1e-4)
    g = torch.Generator().manual_seed(1)
    for B, upper in ((32, 0.12), (256, 0.02)):
        values = [cross_unit_dependence(torch.randn(B, 6, 1, generator=g)).item() for _ in range(100)]
        assert sum(values) / len(values) < upper


def test_non_monotone_copies_and_mixtures_are_seen_where_correlation_is_blind():
    u, v = _uniform(512, 2), _uniform(512, 3)
    independent = unit_pair_cka(torch.stack([u, v], 1))[0, 1].item()
    for name, other in (("square", u.square()), ("abs", u.abs()), ("cos", torch.cos(torch.pi * u)),
                        ("mixture", u + v)):
        pair = torch.stack([u, other], 1)
        if name != "mixture":  # the three even functions of a symmetric u are uncorrelated with it
            assert cross_unit_correlation(pair).item() < 0.02, name
        assert unit_pair_cka(pair)[0, 1].item() > independent + 0.2, name
    # two rotated mixtures of the same two independent factors: uncorrelated, yet dependent
    rotated = torch.stack([u + v, u - v], 1)
    assert cross_unit_correlation(rotated).item() < 0.02
    assert unit_pair_cka(rotated)[0, 1].item() > max(5 * independent, independent + 0.05)  # weaker, still seen


def test_the_score_ignores_scale_shift_and_within_unit_structure():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(64, 3, 2, generator=g)
    moved = z * torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1) + 5.0
    assert cross_unit_dependence(moved).item() == pytest.approx(cross_unit_dependence(z).item(), rel=1e-4)
    cka = unit_pair_cka(z)
    assert torch.allclose(cka, cka.T) and torch.allclose(cka.diagonal(), torch.ones(3), atol=1e-5)
    a, b = _uniform(400, 5), _uniform(400, 6)
    two_units = torch.stack([torch.cat([a, a.square()], 1), torch.cat([b, -b], 1)], dim=1)  # (B, 2, 2)
    assert cross_unit_dependence(two_units).item() < 0.03


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="B, N, d"):
        cross_unit_dependence(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="2 units"):
        cross_unit_dependence(torch.zeros(4, 1, 3))
    with pytest.raises(ValueError, match="3 samples"):
        cross_unit_dependence(torch.zeros(2, 4, 1))


PENALTIES = [  # (switch, result key, score, smallest batch with a term)
    ("unit_decorrelation_weight", "unit_correlation", cross_unit_correlation, 2),
    ("unit_dependence_weight", "unit_dependence", cross_unit_dependence, 3),
]


@pytest.mark.parametrize("switch, key, score, min_batch", PENALTIES)
def test_the_term_is_off_by_default_and_reaches_only_the_encoder(ldm_ckpt, switch, key, score, min_batch):
    x = random_images(8)
    published = make_module(ldm_ckpt, dis_weight=0.0)
    out = published.compute_losses(x, generator=torch.Generator().manual_seed(0))
    assert key not in out and torch.equal(out["loss"], out["loss_rec"])

    module = make_module(ldm_ckpt, dis_weight=0.0, **{switch: 0.5})
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    expected = score(out["z"])
    assert out[key].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item() + 0.5 * expected.item(), rel=1e-6)
    # At initialisation G = 0, so L_r gives the encoder no gradient: the encoder's gradient is the
    # penalty's alone, and the penalty reaches no shift-decoder parameter.
    out["loss"].backward()
    encoder_grad = sum(p.grad.abs().sum() for p in module.encoder.parameters() if p.grad is not None)
    assert encoder_grad > 0
    module.zero_grad()
    out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    (0.5 * out[key]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.denoiser.trainable_parameters())


@pytest.mark.parametrize("switch, key, score, min_batch", PENALTIES)
def test_bad_settings_name_the_key(ldm_ckpt, switch, key, score, min_batch):
    with pytest.raises(ConfigError, match=f"{switch} must be >= 0"):
        make_module(ldm_ckpt, **{switch: -1.0})
    with pytest.raises(ConfigError, match=f"{switch} > 0 needs num_units >= 2"):
        make_module(ldm_ckpt, num_units=1, **{switch: 0.1})


@pytest.mark.parametrize("switch, key, score, min_batch", PENALTIES)
def test_batches_too_small_for_the_score_have_no_term(ldm_ckpt, switch, key, score, min_batch):
    # eval mode: the encoder's BatchNorm cannot train on one image (the published module neither)
    module = make_module(ldm_ckpt, dis_weight=0.0, **{switch: 0.5}).eval()
    for B in range(1, min_batch):
        out = module.compute_losses(random_images(B), generator=torch.Generator().manual_seed(0))
        assert key not in out and torch.equal(out["loss"], out["loss_rec"])
    out = module.compute_losses(random_images(min_batch), generator=torch.Generator().manual_seed(0))
    assert key in out
