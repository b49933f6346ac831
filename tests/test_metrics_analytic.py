"""Analytic truths of the disentanglement metrics on tiny ground-truth datasets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from disdiff.data.base import GroundTruthDataset
from disdiff.evaluation.views import IndexObservations, LatentLookup
from disdiff.metrics import METRICS, MetricError, dci, factor_vae, mig, modularity, sap, utils

SIZES = (4, 5, 6)
SMALL = {
    "beta_vae": dict(batch_size=16, num_train=300, num_eval=200),
    "factor_vae": dict(batch_size=16, num_train=300, num_eval=200, num_variance_estimate=1000),
    "dci": dict(num_train=300, num_test=100),
    "mig": dict(num_train=2000),
    "sap": dict(num_train=400, num_test=200),
    "modularity": dict(num_train=1000, num_test=500),
}


class PixelFactors(GroundTruthDataset):
    """1x1 images with one channel per factor holding its value: exercises the image path."""

    factor_names = ("a", "b", "c")

    def __init__(self, sizes=SIZES):
        self.factor_sizes = tuple(sizes)
        self.image_shape = (1, 1, len(sizes))

    def _read_images(self, indices):
        return self.factors_of(indices).astype(np.uint8)[:, None, None, :]


def decode_factors(images: np.ndarray) -> np.ndarray:
    return np.round((images.reshape(len(images), -1) + 1.0) * 127.5)


def factors_table(view: IndexObservations) -> np.ndarray:
    return view.factors_of(np.arange(view.num_images)).astype(np.float64)


def score(name, dataset, fn, **extra):
    return METRICS[name].compute(dataset, fn, np.random.RandomState(0), **{**SMALL[name], **extra})


@pytest.fixture(scope="module")
def view():
    return IndexObservations(SIZES, ("a", "b", "c"))


@pytest.fixture(scope="module")
def truth(view):
    return LatentLookup(factors_table(view))


def test_ground_truth_factors_are_perfect(view, truth):
    # Through real (1x1 pixel) observations, decoded back to the factors.
    images = PixelFactors()
    fvae = score("factor_vae", images, decode_factors)
    assert {k: fvae[k] for k in ("train_accuracy", "eval_accuracy", "num_active_dims")} == {
        "train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}
    votes = np.array(fvae["eval_votes"])  # each factor's votes all go to its own dimension
    assert votes.sum() == SMALL["factor_vae"]["num_eval"] and np.count_nonzero(votes - np.diag(np.diag(votes))) == 0
    assert score("beta_vae", images, decode_factors)["eval_accuracy"] == 1.0
    d = score("dci", view, truth)
    assert d["disentanglement"] > 0.99 and d["completeness"] > 0.99
    assert d["informativeness_test"] == 1.0
    assert score("mig", view, truth)["discrete_mig"] > 0.97
    assert score("sap", view, truth)["SAP_score"] > 0.3
    m = score("modularity", view, truth)
    assert m["modularity_score"] > 0.99 and m["explicitness_score_test"] > 0.9


def test_bijective_code_has_mig_one(view):
    rs = np.random.RandomState(3)
    table = factors_table(view).astype(np.int64)
    # Each unit relabels its factor by a random permutation, then stretches it: a bijection per factor.
    code = np.stack([rs.permutation(s)[table[:, k]] * (k + 1.5) - 7.0 for k, s in enumerate(SIZES)], axis=1)
    value = score("mig", view, LatentLookup(code))["discrete_mig"]
    assert value > 0.97


def test_random_representation_scores_near_chance(view):
    rs = np.random.RandomState(1)
    noise = LatentLookup(rs.randn(view.num_images, 3))
    chance = 1.0 / len(SIZES)
    assert abs(score("factor_vae", view, noise)["eval_accuracy"] - chance) < 0.15
    assert abs(score("beta_vae", view, noise)["eval_accuracy"] - chance) < 0.12
    d = score("dci", view, noise)
    assert d["disentanglement"] < 0.15 and d["completeness"] < 0.15
    assert score("mig", view, noise)["discrete_mig"] < 0.05
    assert score("sap", view, noise)["SAP_score"] < 0.1


def _noisy(view, seed=2, noise=0.6):
    rs = np.random.RandomState(seed)
    table = factors_table(view)
    mixed = table + noise * rs.randn(*table.shape) + 0.2 * table[:, [1, 2, 0]]
    return mixed


def test_permutation_and_rescaling_invariance(view):
    base = _noisy(view)
    permuted = base[:, [2, 0, 1]]
    rescaled = base * np.array([3.0, 0.5, 10.0]) + np.array([1.0, -4.0, 2.0])
    small_dci = dict(num_train=250, num_test=100)
    expected = {name: score(name, view, LatentLookup(base), **(small_dci if name == "dci" else {}))
                for name in ("factor_vae", "mig", "dci")}
    base_votes = np.array(expected["factor_vae"].pop("eval_votes"))
    for transformed, columns in ((permuted, [2, 0, 1]), (rescaled, [0, 1, 2])):
        fn = LatentLookup(transformed)
        fvae = score("factor_vae", view, fn)
        # the votes follow the dimensions: column j of the transformed code is column columns[j] of the base
        np.testing.assert_array_equal(np.array(fvae.pop("eval_votes")), base_votes[:, columns])
        assert fvae == expected["factor_vae"]
        assert score("mig", view, fn)["discrete_mig"] == pytest.approx(expected["mig"]["discrete_mig"], abs=1e-12)
        # Trees are invariant up to ties: when two codes induce the same partition of a small node,
        # sklearn credits whichever it visits first, so permuted columns move a little importance.
        d = score("dci", view, fn, **small_dci)
        for key, value in expected["dci"].items():
            assert d[key] == pytest.approx(value, abs=0.02), key
    # The logistic regression of beta-VAE is invariant to permuting features (not to rescaling them).
    assert score("beta_vae", view, LatentLookup(permuted)) == pytest.approx(score("beta_vae", view, LatentLookup(base)))


def test_duplicating_a_factor_lowers_mig_and_completeness(view):
    table = factors_table(view)
    plain = score("mig", view, LatentLookup(table))["discrete_mig"]
    doubled = np.concatenate([table, table[:, :1]], axis=1)
    assert score("mig", view, LatentLookup(doubled))["discrete_mig"] < plain - 0.25  # factor a loses its gap
    c_plain = score("dci", view, LatentLookup(table))["completeness"]
    c_doubled = score("dci", view, LatentLookup(doubled))["completeness"]
    assert c_doubled < c_plain - 0.1


# ------------------------------------------------------------------------ formula pieces
def test_dci_formulas_on_known_importances():
    assert dci.disentanglement(np.eye(4)) == pytest.approx(1.0)
    assert dci.completeness(np.eye(4)) == pytest.approx(1.0)
    assert dci.disentanglement(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
    assert dci.completeness(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
    # One code explains two factors equally: D_j = 1 - log_K 2 for that code.
    r = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    expected_d = (2 / 3) * (1 - np.log(2) / np.log(3)) + (1 / 3) * 1.0
    assert dci.disentanglement(r) == pytest.approx(expected_d, abs=1e-6)
    assert dci.completeness(r) == pytest.approx(1.0, abs=1e-6)
    p = np.random.RandomState(0).rand(5, 3)
    assert utils.entropy(p, base=5, axis=0) == pytest.approx(scipy.stats.entropy(p, base=5))


def test_histogram_discretisation_and_information():
    x = np.array([[0.0, 0.5, 1.0, 1.0, 0.25]])
    d = utils.histogram_discretize(x, num_bins=4)
    assert d.tolist() == [[1, 3, 4, 4, 2]]
    y = np.array([[0, 1, 2, 2, 1]])
    assert utils.discrete_entropy(y)[0] == pytest.approx(scipy.stats.entropy([1, 2, 2]))
    assert utils.discrete_mutual_info(y, y)[0, 0] == pytest.approx(utils.discrete_entropy(y)[0])


def test_modularity_formula():
    assert modularity.modularity(np.eye(3)) == pytest.approx(1.0)
    assert modularity.modularity(np.ones((3, 3))) == pytest.approx(0.0)
    assert modularity.modularity(np.zeros((2, 3))) == 0.0


def test_sap_continuous_and_top_two():
    assert sap.compute_avg_diff_top_two(np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.8]])) == pytest.approx((0.7 + 0.5) / 2)
    rs = np.random.RandomState(0)
    ys = rs.randint(5, size=(2, 500)).astype(float)
    mus = np.stack([ys[0], ys[1] + 0.01 * rs.randn(500), np.zeros(500)])
    out = sap.sap_from_codes(mus, ys, mus, ys, continuous_factors=True)
    assert out["SAP_score"] > 0.95


def test_factor_vae_quirk_only_relabels_vote_columns(view):
    table = factors_table(view)
    with_dead_unit = LatentLookup(np.concatenate([np.zeros((len(table), 1)), table], axis=1))
    full = score("factor_vae", view, with_dead_unit)
    quirk = score("factor_vae", view, with_dead_unit, argmin_index="active")
    assert full["eval_accuracy"] == quirk["eval_accuracy"] == 1.0
    assert full["num_active_dims"] == 3 and quirk["num_active_dims"] == 4  # the original reported the mask length
    global_var = np.array([0.0, 1.0, 1.0, 1.0])
    active = factor_vae.prune_dims(global_var, 0.05)
    votes = {mode: factor_vae.generate_votes(view, with_dead_unit, 8, 50, np.random.RandomState(0),
                                             np.array([1.0, 1.0, 1.0, 1.0]), active, mode)
             for mode in ("full", "active")}
    assert votes["full"][:, 0].sum() == 0  # nothing votes for the dead unit
    assert votes["active"][:, 3].sum() == 0  # the quirk shifts every vote one column left
    np.testing.assert_array_equal(votes["full"][:, 1:], votes["active"][:, :3])


def test_no_active_dimension_scores_zero(view):
    constant = LatentLookup(np.zeros((view.num_images, 3)))
    assert score("factor_vae", view, constant) == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0,
                                                   "eval_votes": []}


def test_bad_inputs_raise_metric_errors(view, truth):
    with pytest.raises(MetricError, match="at least two dimensions"):
        mig.mig_from_codes(np.zeros((1, 10)), np.zeros((2, 10)))
    with pytest.raises(MetricError, match="positive"):
        score("mig", view, truth, num_train=0)
    with pytest.raises(MetricError, match="argmin_index"):
        score("factor_vae", view, truth, argmin_index="nope")

    class NotAGrid(PixelFactors):
        is_factor_grid = False

    with pytest.raises(MetricError, match="not a factor grid"):
        score("beta_vae", NotAGrid(), decode_factors)


def test_factor_vae_vote_shares():
    shares = factor_vae.vote_shares([[3, 1, 0], [0, 0, 0], [0, 5, 5]])
    np.testing.assert_allclose(shares, [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    with pytest.raises(MetricError, match="factors x dimensions"):
        factor_vae.vote_shares([1, 2, 3])
