"""disdiff.inference.swap_check: the swap grid read by classifiers, against analytic cases."""

import numpy as np
import pytest
import torch
from disdiff_support import IMAGE_SIZE, BrightnessGrid, make_module

from disdiff.inference.swap_check import check_swaps, fit_readers, swap_scores


def _pairs(p: int = 200, sizes=(4, 5, 3), seed: int = 0):
    rng = np.random.RandomState(seed)
    source = np.stack([rng.randint(0, s, p) for s in sizes], axis=1)
    reference = np.stack([rng.randint(0, s, p) for s in sizes], axis=1)
    return source, reference


def test_a_perfect_swap_moves_and_adopts_exactly_its_own_factor():
    source, reference = _pairs()
    K = source.shape[1]
    swap = np.stack([np.where(np.arange(K) == k, reference, source) for k in range(K)])  # unit k carries factor k
    own_accuracy, moved, adopted = swap_scores(source, swap, source, reference)
    assert np.array_equal(own_accuracy, np.ones(K))
    assert np.array_equal(moved, np.eye(K)) and np.array_equal(adopted, np.eye(K))


def test_a_swap_that_changes_nothing_scores_zero_and_a_unit_carrying_two_factors_scores_both():
    source, reference = _pairs()
    own_accuracy, moved, adopted = swap_scores(source, np.stack([source, source]), source, reference)
    assert np.array_equal(moved, np.zeros((2, 3))) and np.array_equal(adopted, np.zeros((2, 3)))
    both = np.where(np.arange(3) < 2, reference, source)  # one unit holds factors 0 and 1
    _, moved, adopted = swap_scores(source, both[None], source, reference)
    assert np.array_equal(moved[0], [1.0, 1.0, 0.0]) and np.array_equal(adopted[0], [1.0, 1.0, 0.0])


def test_reads_at_random_give_chance_and_own_accuracy_counts_the_own_generation():
    source, reference = _pairs(p=4000)
    rng = np.random.RandomState(1)
    random_reads = np.stack([rng.randint(0, s, 4000) for s in (4, 5, 3)], axis=1)
    own_accuracy, _, adopted = swap_scores(random_reads, random_reads[None], source, reference)
    assert own_accuracy == pytest.approx([1 / 4, 1 / 5, 1 / 3], abs=0.03)
    assert adopted[0] == pytest.approx([1 / 4, 1 / 5, 1 / 3], abs=0.03)


def test_a_factor_without_differing_pairs_is_nan_and_bad_shapes_are_refused():
    source, reference = _pairs(p=10)
    reference[:, 2] = source[:, 2]
    _, moved, adopted = swap_scores(source, source[None], source, reference)
    assert np.isnan(moved[0, 2]) and np.isnan(adopted[0, 2]) and moved[0, 0] == 0
    with pytest.raises(ValueError, match="shapes"):
        swap_scores(source, source, source, reference)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_readers_read_an_encoded_factor_and_not_noise(kind):
    rng = np.random.RandomState(0)
    factors = np.stack([rng.randint(0, 4, 1000), rng.randint(0, 3, 1000)], axis=1)
    informative = np.concatenate([np.eye(4)[factors[:, 0]], rng.normal(size=(1000, 6))], axis=1)  # factor 1 absent
    _, accuracy = fit_readers(informative[:800], factors[:800], informative[800:], factors[800:], kind)
    assert accuracy[0] == 1.0 and accuracy[1] < 0.5  # chance for factor 1 is 1/3
    with pytest.raises(ValueError, match="reader"):
        fit_readers(informative, factors, informative, factors, "forest")


def _grid() -> BrightnessGrid:
    return BrightnessGrid(others=64)  # 256 images: 200 for the readers, the rest for the pairs


def test_with_zero_fields_no_swap_moves_anything(ldm_ckpt):
    # The shift decoder's output layers start at zero (spec), so a swapped code generates exactly the
    # source's own image from the same x_T and noise: every entry of `moved` must be 0.
    module = make_module(ldm_ckpt, num_units=3, unit_dim=2).eval()
    check = check_swaps(module, _grid(), pairs=10, steps=3, seed=2, reader="linear", reader_images=200,
                        batch_size=4)
    assert check.moved.shape == (3, 2) and np.array_equal(check.moved, np.zeros((3, 2)))
    assert check.reader_accuracy[0] > 0.9  # brightness is plain in the first-stage latent; `nothing` is not
    assert check.record()["units"][0]["moved"] == 0.0 and check.draws["pairs"] == 10


def test_a_unit_that_carries_brightness_moves_and_adopts_brightness_alone(ldm_ckpt, monkeypatch):
    # An oracle generator: the image shows the brightness that unit 0's code holds (the dataset's own
    # rendering of it), whatever the other units hold. So row 0 must move and adopt brightness in every
    # pair whose brightness differs, rows 1 and 2 never; the own generation brings brightness back.
    import disdiff.inference.swap_check as swap_check

    module = make_module(ldm_ckpt, num_units=3, unit_dim=2).eval()
    encode = module.encode_representation

    def unit_0_is_brightness(images):
        z = encode(images).clone()
        z[:, 0] = torch.round((images.mean(dim=(1, 2, 3)) + 0.75) * 2.0)[:, None]  # the factor value 0..3
        return z

    def render_unit_0(module, z, steps, eta, seed):
        level = z[:, 0, 0].reshape(-1, 1, 1, 1)
        return (level / 2.0 - 0.75).expand(-1, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous()

    monkeypatch.setattr(module, "encode_representation", unit_0_is_brightness)
    monkeypatch.setattr(module, "decode_latents", lambda latents, quantize=True: latents)  # the "latents" are images
    monkeypatch.setattr(swap_check, "generate_latents", lambda module, z, steps, eta, seed: render_unit_0(
        module, z, steps, eta, seed))
    check = check_swaps(module, _grid(), pairs=24, steps=1, seed=5, reader="linear", reader_images=200,
                        batch_size=10)
    assert check.reader_accuracy[0] == 1.0 and check.own_accuracy[0] == 1.0 and check.resampled[0] == 0.0
    assert check.moved[:, 0].tolist() == [1.0, 0.0, 0.0] and check.adopted[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert check.rows()[0]["top_factor"] == "brightness" and check.rows()[0]["adopted"] == 1.0
    subset = check_swaps(module, _grid(), pairs=24, steps=1, seed=5, reader="linear", reader_images=200,
                         batch_size=10, units=[2, 0])  # rows in the order asked, named by their unit
    assert [row["unit"] for row in subset.rows()] == [2, 0] and subset.moved[:, 0].tolist() == [0.0, 1.0]
    # A code given by the dataset's labels instead of the encoder (as experiments/oracle_bound.py does), here
    # the brightness reversed: the generations show 3 - brightness, so the own code never brings it back,
    # and row 0 still moves it in every differing pair.
    grid = _grid()

    def reversed_brightness(indices):
        code = torch.zeros(len(indices), 3, 2)
        code[:, 0] = 3.0 - torch.as_tensor(grid.factors_of(indices)[:, :1], dtype=torch.float32)
        return code

    labelled = check_swaps(module, grid, pairs=24, steps=1, seed=5, reader="linear", reader_images=200,
                           batch_size=10, code_of=reversed_brightness)
    assert labelled.own_accuracy[0] == 0.0 and labelled.moved[:, 0].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="images"):
        check_swaps(module, _grid(), pairs=100, reader_images=200)

    # A generator whose brightness follows the sampler's seed, not the code: `resampled` sees it (the
    # resampled batches' seeds are 3 past the first ones, so of the other parity).
    monkeypatch.setattr(swap_check, "generate_latents", lambda module, z, steps, eta, seed: torch.full(
        (z.shape[0], 3, IMAGE_SIZE, IMAGE_SIZE), (seed % 2) / 2.0 - 0.75))
    check = check_swaps(module, _grid(), pairs=24, steps=1, seed=5, reader="linear", reader_images=200,
                        batch_size=10)
    assert check.resampled[0] == 1.0 and check.moved[:, 0].tolist() == [0.0, 0.0, 0.0]
