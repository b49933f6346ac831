"""The opt-in penalty on two units' shift fields pointing the same way: analytic values, invariances,
where its gradient goes and when it applies."""

import pytest
import torch
from disdiff_support import assert_gradient_reaches_only_the_trained_parts, losses_with_opt_in_term, make_module

from disdiff.config import ConfigError
from disdiff.models.field_alignment import cross_unit_field_alignment, field_cosines


def test_parallel_fields_score_one_and_disjoint_fields_zero():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 1, 4, 6, 6, generator=g)
    parallel = torch.cat([base, -2.0 * base, 0.3 * base], dim=1)  # the same direction up to sign and size
    assert cross_unit_field_alignment(parallel).item() == pytest.approx(1.0, abs=1e-6)
    disjoint = torch.zeros(5, 3, 4, 6, 6)
    for k in range(3):  # each unit acts on its own rows of the latent
        disjoint[:, k, :, 2 * k:2 * k + 2] = torch.randn(5, 4, 2, 6, generator=g)
    assert cross_unit_field_alignment(disjoint).item() == pytest.approx(0.0, abs=1e-12)


def test_random_directions_score_about_one_over_the_dimension():
    fields = torch.randn(400, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # D = 192
    assert cross_unit_field_alignment(fields).item() == pytest.approx(1 / 192, rel=0.1)


def test_cosines_are_per_sample_and_scale_free():
    g = torch.Generator().manual_seed(2)
    fields = torch.randn(3, 4, 2, 5, 5, generator=g)
    cos = field_cosines(fields)
    assert cos.shape == (3, 4, 4)
    assert torch.allclose(torch.diagonal(cos, dim1=1, dim2=2), torch.ones(3, 4), atol=1e-6)
    scales = torch.tensor([1e-3, 1.0, 50.0, 7.0]).view(1, 4, 1, 1, 1)  # a young (small) field pays the same
    assert torch.allclose(field_cosines(fields * scales), cos, atol=1e-5)
    by_hand = torch.nn.functional.cosine_similarity(fields[1, 0].flatten(), fields[1, 2].flatten(), dim=0)
    assert cos[1, 0, 2].item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_dead_fields_score_zero_with_finite_gradients():
    fields = torch.zeros(4, 3, 2, 4, 4, requires_grad=True)
    value = cross_unit_field_alignment(fields)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(fields.grad).all()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="B, N"):
        field_cosines(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="2 units"):
        cross_unit_field_alignment(torch.zeros(4, 1, 3, 2, 2))


def test_the_term_is_off_by_default_and_reaches_the_shift_decoder_and_the_encoder(ldm_ckpt):
    module, out = losses_with_opt_in_term(ldm_ckpt, "field_alignment", field_alignment_weight=0.5)
    expected = cross_unit_field_alignment(out["fields"])
    assert 0.0 < out["field_alignment"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item() + 0.5 * expected.item(), rel=1e-6)
    (0.5 * out["field_alignment"]).backward()
    assert_gradient_reaches_only_the_trained_parts(module)


def test_bad_settings_name_the_key(ldm_ckpt):
    with pytest.raises(ConfigError, match="field_alignment_weight must be >= 0"):
        make_module(ldm_ckpt, field_alignment_weight=-1.0)
    with pytest.raises(ConfigError, match="field_alignment_weight > 0 needs num_units >= 2"):
        make_module(ldm_ckpt, num_units=1, field_alignment_weight=0.1)
