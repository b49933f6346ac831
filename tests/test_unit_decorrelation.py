"""The opt-in penalty on correlation between units: analytic values and invariances."""

import pytest
import torch

from disdiff.models.unit_decorrelation import cross_unit_correlation


def test_copies_score_one_and_independent_units_about_one_over_b():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4096, 1, 1, generator=g)
    copies = torch.cat([base, -3.0 * base + 2.0, 0.5 * base], dim=1)  # copies up to sign, scale and shift
    assert cross_unit_correlation(copies).item() == pytest.approx(1.0, abs=1e-4)
    B = 64
    values = [cross_unit_correlation(torch.randn(B, 6, 1, generator=g)).item() for _ in range(400)]
    assert sum(values) / len(values) == pytest.approx(1.0 / B, rel=0.15)


def test_within_unit_correlation_is_free_and_scale_does_not_matter():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(20000, 1, generator=g), torch.randn(20000, 1, generator=g)
    two_units = torch.stack([torch.cat([a, 2 * a], 1), torch.cat([b, -b], 1)], dim=1)  # (B, 2, 2)
    assert cross_unit_correlation(two_units).item() < 1e-3
    z = torch.randn(128, 3, 2, generator=g)
    scaled = z * torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1) + 5.0
    assert cross_unit_correlation(scaled).item() == pytest.approx(cross_unit_correlation(z).item(), rel=1e-4)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="B, N, d"):
        cross_unit_correlation(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="2 units"):
        cross_unit_correlation(torch.zeros(4, 1, 3))


# The module-level checks (off by default, gradient reaches only the encoder, small batches, bad
# settings) are shared with the dependence penalty: tests/test_unit_dependence.py.
