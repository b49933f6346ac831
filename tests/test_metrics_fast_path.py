"""The fast paths (batched representation, parallel tree fits, index views) equal plain loops exactly."""

from __future__ import annotations

import numpy as np
import pytest

from disdiff.data.base import GroundTruthDataset
from disdiff.evaluation.views import IndexObservations, LatentLookup
from disdiff.metrics import METRICS, utils
from disdiff.metrics.reference import REFERENCE
from disdiff.metrics.reference import generate_batch_factor_code as reference_codes

SIZES = (3, 4, 2, 5)
SMALL = {
    "beta_vae": dict(batch_size=8, num_train=120, num_eval=60),
    "factor_vae": dict(batch_size=8, num_train=150, num_eval=70, num_variance_estimate=300),
    "dci": dict(num_train=90, num_test=40, batch_size=7),
    "mig": dict(num_train=333, batch_size=16),
}


class Grid(GroundTruthDataset):
    """The plain base-class behaviour (sampling, index arithmetic), no images."""

    factor_names = ("a", "b", "c", "d")
    image_shape = (1, 1, 1)

    def __init__(self):
        self.factor_sizes = SIZES

    def _read_images(self, indices):
        raise AssertionError("not used")

    def sample_observations_from_factors(self, factors, rng=None):
        return self.index_of(factors)


@pytest.fixture(scope="module")
def lookup():
    view = IndexObservations(SIZES)
    table = view.factors_of(np.arange(view.num_images)).astype(float)
    rs = np.random.RandomState(7)
    return LatentLookup(table @ rs.randn(4, 4) * 0.3 + table + rs.randn(*table.shape))


def test_index_view_samples_like_the_base_class():
    view, grid = IndexObservations(SIZES), Grid()
    a, b = np.random.RandomState(5), np.random.RandomState(5)
    for n in (1, 7, 64):
        fa, fb = view.sample_factors(n, a), grid.sample_factors(n, b)
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(view.sample_observations_from_factors(fa), grid.index_of(fb))
    assert a.randint(1000) == b.randint(1000)  # the random streams stay in step


@pytest.mark.parametrize("chunk_size", [None, 50, 8192])
def test_batch_factor_code_matches_plain_loop(lookup, chunk_size):
    fast = utils.generate_batch_factor_code(IndexObservations(SIZES), lookup, 203, np.random.RandomState(1), 16, chunk_size)
    plain = reference_codes(Grid(), lookup, 203, np.random.RandomState(1), 16)
    np.testing.assert_array_equal(fast[0], plain[0])
    np.testing.assert_array_equal(fast[1], plain[1])


@pytest.mark.parametrize("name", ["beta_vae", "factor_vae", "dci", "mig"])
def test_fast_metric_equals_reference(lookup, name):
    fast = METRICS[name].compute(IndexObservations(SIZES), lookup, np.random.RandomState(0), chunk_size=100,
                                 **SMALL[name])
    plain = REFERENCE[name](Grid(), lookup, np.random.RandomState(0), **SMALL[name])
    assert fast == plain


def test_parallel_tree_fits_equal_sequential(lookup):
    view = IndexObservations(SIZES)
    one = METRICS["dci"].compute(view, lookup, 0, n_jobs=1, **SMALL["dci"])
    two = METRICS["dci"].compute(view, lookup, 0, n_jobs=2, **SMALL["dci"])
    assert one == two


def test_protocol_overlapping_dci_equals_sequential(lookup):
    """With n_jobs > 1, DCI runs in a background thread beside the other metrics: same scores."""
    from disdiff.evaluation.protocol import DatasetInfo, score_representation

    info = DatasetInfo("grid", int(np.prod(SIZES)), factor_names=Grid.factor_names, factor_sizes=SIZES)
    representation = lookup(np.arange(int(np.prod(SIZES))))
    metrics = ["beta_vae", "factor_vae", "dci", "mig"]
    sequential, _ = score_representation(representation, info, metrics, SMALL, seed=0, n_jobs=1)
    overlapped, seconds = score_representation(representation, info, metrics, SMALL, seed=0, n_jobs=2)
    assert overlapped == sequential
    assert set(seconds) == set(metrics)
