"""TAD (CelebA attributes) and FID: analytic values, filters, and the missing-weights error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from disdiff.metrics import MetricError, fid, tad


def _attributes(n=2000, k=3, seed=0):
    return np.random.RandomState(seed).randint(0, 2, size=(n, k))


def test_tad_counts_captured_independent_attributes():
    a = _attributes()
    rs = np.random.RandomState(1)
    n = len(a)
    latents = np.stack([2 * a[:, 0] + 0.2 * rs.randn(n), -3.0 * a[:, 1] + 0.2 * rs.randn(n), rs.randn(n), np.zeros(n)], axis=1)
    out = tad.compute_tad(latents, a)
    assert out["attributes_captured"] == 2
    assert out["per_attribute"]["kept"] == [True, True, False]
    assert out["per_attribute"]["best_latent"][:2] == [0, 1]
    assert out["per_attribute"]["max_auroc"][:2] == pytest.approx([1.0, 1.0], abs=0.01)
    auroc = tad.auroc_matrix(latents, a)
    assert auroc[3].tolist() == [0.5, 0.5, 0.5]  # a constant latent (range <= 0.2)
    assert out["tad"] == pytest.approx(sum(np.sort(auroc[:, i])[-1] - np.sort(auroc[:, i])[-2] for i in (0, 1)))


def test_tad_exact_auroc_of_a_binary_latent_and_sklearn_agreement():
    a = _attributes(k=1)
    assert tad.auroc_matrix(a.astype(float), a)[0, 0] == pytest.approx(1.0)
    # The "z < theta" polarity never reaches (1, 1): a perfect negative binary code scores 0 (spec quirk) ...
    assert tad.auroc_matrix(1.0 - a.astype(float), a)[0, 0] == pytest.approx(0.0)
    # ... unless the end points are added.
    assert tad.auroc_matrix(1.0 - a.astype(float), a, add_endpoints=True)[0, 0] == pytest.approx(1.0)
    rs = np.random.RandomState(2)
    z = a[:, 0] + 0.8 * rs.randn(len(a))
    grid = tad.auroc_matrix(z[:, None], a)[0, 0]
    exact = roc_auc_score(a[:, 0], z)
    assert exact - 0.01 <= grid <= exact + 0.1  # an 11-point right Riemann sum: coarse, biased upwards


def test_tad_correlated_attributes_are_filtered():
    a = _attributes(k=2)
    a = np.concatenate([a, a[:, :1]], axis=1)  # attribute 2 duplicates attribute 0
    latents = np.stack([a[:, 0], a[:, 1], np.zeros(len(a))], axis=1).astype(float)
    out = tad.compute_tad(latents, a, attribute_names=["x", "y", "x2"])
    assert out["per_attribute"]["kept"] == [False, True, False]
    assert out["per_attribute"]["rho"][0] == pytest.approx(1.0)
    assert out["attributes_captured"] == 1
    loose = tad.compute_tad(latents, a, correlation_threshold=1.0)
    assert loose["attributes_captured"] == 3
    with pytest.raises(MetricError, match="binary"):
        tad.compute_tad(latents, a * 2 - 1)


def test_frechet_distance_analytic():
    rs = np.random.RandomState(0)
    x = rs.randn(50, 4)
    s = np.cov(x, rowvar=False)
    assert fid.frechet_distance(x.mean(0), s, x.mean(0), s) == pytest.approx(0.0, abs=1e-6)
    assert fid.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(9 + 1 + 4 - 2 * 2)
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b)) == pytest.approx(expected)
    singular = np.zeros((3, 3))
    assert np.isfinite(fid.frechet_distance(np.zeros(3), singular, np.zeros(3), singular))


def test_missing_inception_weights_say_none_ship(tmp_path):
    with pytest.raises(fid.InceptionWeightsMissing, match="No Inception weights ship") as err:
        fid.load_inception(None)
    assert "pt_inception-2015-12-05" in str(err.value)
    with pytest.raises(fid.InceptionWeightsMissing, match="not found"):
        fid.load_inception(tmp_path / "nope.pt")
    state = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(2)}, state)
    with pytest.raises(fid.InceptionWeightsMissing, match="TorchScript"):
        fid.load_inception(state)


class _RangeProbe(torch.nn.Module):
    """Stand-in feature extractor: features are statistics of its input (records the range it sees)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return torch.stack([flat.min(1).values, flat.max(1).values, flat.mean(1), flat.std(1)], dim=1)


def test_fid_with_a_torchscript_extractor_sees_inputs_in_minus_one_one(tmp_path):
    path = tmp_path / "probe.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_RangeProbe()).save(str(path))
    model = fid.load_inception(path)
    rs = np.random.RandomState(0)
    images = rs.randint(0, 256, size=(12, 8, 8, 3)).astype(np.uint8)  # uint8 NHWC
    feats = fid.compute_activations(images, model, batch_size=5)
    assert feats.shape == (12, 4)
    assert feats[:, 0].min() >= -1.0 and feats[:, 1].max() <= 1.0 and feats[:, 1].max() > 0.9
    assert fid.compute_fid(images, images, model) == pytest.approx(0.0, abs=1e-6)
    np.savez(tmp_path / "a.npz", arr_0=images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    mu, sigma = fid.load_images_or_statistics(tmp_path / "a.npz", model)
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    with pytest.raises(MetricError, match=r"\[-1, 1\]"):
        fid.compute_activations(images.astype(np.float32), model)
