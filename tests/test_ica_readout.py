"""The DPM head's opt-in ICA read-out (``encoder_config.ica_init``): ICA recovers known independent
sources, the encoder starts from them, gradients reach it, it is fitted once and survives a checkpoint."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from disdiff_support import ImageBatches, make_module, random_images, save_module_checkpoint
from torch.utils.data import DataLoader

from disdiff.api import DisDiff
from disdiff.config import ConfigError
from disdiff.models.ica_readout import (ICAReadout, independent_components, mutual_information, negentropy,
                                       pca_whitening, select_independent)
from disdiff.training.deviations import deviations_in_use
from disdiff.training.encoder_setup import fit_ica_readout

ICA = {"backbone": "dpm", "hidden": 16, "ica_init": True, "ica_images": 24}


def mixed_sources(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three independent sources (two discrete uniform, one Laplace) mixed into 8 dimensions."""
    rng = np.random.RandomState(seed)
    sources = np.stack([rng.randint(0, 10, n), rng.randint(0, 4, n), rng.laplace(size=n)], axis=1).astype(float)
    mixing = rng.normal(size=(3, 8))
    return sources, sources @ mixing + 1e-3 * rng.normal(size=(n, 8))


def test_ica_recovers_independent_sources_one_to_one():
    sources, observed = mixed_sources()
    unmixing, offset, kurtosis = independent_components(observed, 3)
    estimated = observed @ unmixing.T + offset
    assert np.allclose(estimated.mean(0), 0, atol=1e-8) and np.allclose(estimated.std(0), 1, atol=1e-6)
    corr = np.abs(np.corrcoef(estimated.T, sources.T)[:3, 3:])
    assert np.all(corr.max(1) > 0.99)  # each component is one source ...
    assert sorted(corr.argmax(1)) == [0, 1, 2]  # ... and each source is found once
    assert np.all(np.diff(kurtosis) >= 0)  # ordered by kurtosis: the uniform sources first, the Laplace last
    assert corr[2].argmax() == 2 and kurtosis[2] > 1 and kurtosis[0] < -1


def test_pca_whitening_gives_unit_covariance_along_the_leading_components():
    _, observed = mixed_sources(n=3000, seed=1)
    mean, whitening = pca_whitening(observed, 3)
    white = (observed - mean) @ whitening.T
    assert np.allclose(white.T @ white / len(white), np.eye(3), atol=1e-8)
    # the three whitened directions span the leading principal subspace: they keep all but the 1e-3 noise
    projected = white @ np.linalg.pinv(whitening).T + mean
    assert np.abs(projected - observed).max() < 1e-2 * np.abs(observed).max()


def test_ica_equals_scikit_learns_own_whitening_path():
    """Whitening once for all starts changes nothing: the same sources as scikit-learn's FastICA that whitens
    itself (its default SVD solver), start for start."""
    from sklearn.decomposition import FastICA

    _, observed = mixed_sources(n=2000, seed=3)
    for start in (0, 5):
        unmixing, offset, _ = independent_components(observed, 3, seed=start)
        theirs = FastICA(n_components=3, whiten="unit-variance", max_iter=1000, tol=1e-4,
                         random_state=start).fit_transform(observed)
        theirs = (theirs - theirs.mean(0)) / theirs.std(0)
        ours = observed @ unmixing.T + offset
        corr = np.corrcoef(ours.T, theirs.T)[:3, 3:]
        assert np.allclose(np.abs(corr).max(1), 1.0, atol=1e-9)
        matched = theirs[:, np.abs(corr).argmax(1)] * np.sign(corr[np.arange(3), np.abs(corr).argmax(1)])
        assert np.abs(ours - matched).max() < 1e-6


def test_ica_needs_more_vectors_than_components():
    with pytest.raises(ValueError, match="more than 6"):
        independent_components(np.zeros((6, 10)), 6)


def test_negentropy_is_zero_for_a_gaussian_and_positive_otherwise():
    rng = np.random.RandomState(0)
    gaussian, uniform = rng.normal(size=200000), rng.uniform(-3 ** 0.5, 3 ** 0.5, size=200000)  # unit variance
    values = negentropy(np.stack([gaussian, uniform], axis=1))
    assert values[0] < 1e-5 and values[1] > 5e-4  # sampling noise ~1e-6; a uniform's is 7.4e-4


def test_restarts_keep_the_start_of_the_largest_negentropy():
    _, observed = mixed_sources(n=1500, seed=2)
    # Two FastICA iterations leave each start short of the optimum by a different amount, so the starts differ
    # (converged, they all reach the same optimum on this easy mixture and the test could not tell them apart).
    contrasts = []
    for start in range(3, 7):
        unmixing, offset, _ = independent_components(observed, 3, seed=start, max_iter=2)
        contrasts.append(negentropy(observed @ unmixing.T + offset).sum())
    assert max(contrasts) - min(contrasts) > 1e-5 and int(np.argmax(contrasts)) != 0
    unmixing, offset, _ = independent_components(observed, 3, seed=3, max_iter=2, restarts=4)
    assert np.isclose(negentropy(observed @ unmixing.T + offset).sum(), max(contrasts), rtol=1e-12)
    with pytest.raises(ValueError, match="restarts"):
        independent_components(observed, 3, restarts=0)


@pytest.mark.parametrize("estimator", ["binned", "knn"])
def test_mutual_information_of_independent_columns_and_of_a_copy(estimator):
    sources = sources_with_a_copy()
    mi = mutual_information((sources - sources.mean(0)) / sources.std(0), estimator=estimator)
    assert np.allclose(mi, mi.T) and np.all(np.diag(mi) == 0)
    assert mi[0, 1] > 1.0  # the copy is a function of the 10-level factor: about ln 5 nats
    assert mi[0, 2] < 0.05 and mi[0, 3] < 0.05 and mi[2, 3] < 0.05  # independent pairs: the estimator's bias
    with pytest.raises(ValueError, match="estimator"):
        mutual_information(sources, estimator="gaussian")


def test_the_readout_reproduces_the_components_on_raw_features():
    sources, observed = mixed_sources()
    readout = ICAReadout(8, 3)
    kurtosis = readout.fit(torch.from_numpy(100 * observed + 5))  # any feature scale and offset
    with torch.no_grad():
        out = readout(torch.from_numpy(100 * observed + 5).float()).double().numpy()
    assert bool(readout.fitted) and len(kurtosis) == 3
    assert np.allclose(out.mean(0), 0, atol=1e-3) and np.allclose(out.std(0), 1, atol=1e-3)
    assert np.all(np.abs(np.corrcoef(out.T, sources.T)[:3, 3:]).max(1) > 0.99)


def sources_with_a_copy(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Columns: a 10-level factor, a noisy function of it uncorrelated with it (a "copy"), a 4-level factor
    and a Laplace source."""
    rng = np.random.RandomState(seed)
    level = rng.randint(0, 10, n).astype(float)
    copy = (level - 4.5) ** 2 + 0.5 * rng.normal(size=n)
    return np.stack([level, copy, rng.randint(0, 4, n), rng.laplace(size=n)], axis=1)


def test_selection_drops_a_dependent_copy_and_keeps_the_order():
    sources = sources_with_a_copy()
    assert np.abs(np.corrcoef(sources.T)[0, 1]) < 0.05  # uncorrelated, yet a function of the first column
    standard = (sources - sources.mean(0)) / sources.std(0)
    assert select_independent(standard, 3, 0.2) == [0, 2, 3]
    assert select_independent(standard[:, [1, 0, 2, 3]], 3, 0.2) == [0, 2, 3]  # the earlier of the pair stays
    # a threshold nothing passes still gives `keep` columns: the least dependent of the skipped ones
    assert len(select_independent(standard, 3, 1e-9)) == 3
    assert select_independent(standard, 4, 0.2) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="keep 5 of 4"):
        select_independent(standard, 5, 0.2)


def test_a_wide_ica_keeps_one_component_per_independent_group():
    sources = sources_with_a_copy()
    observed = sources @ np.random.RandomState(1).normal(size=(4, 8))
    readout = ICAReadout(8, 3, num_components=4)
    assert len(readout.fit(torch.from_numpy(observed))) == 3
    with torch.no_grad():
        out = readout(torch.from_numpy(observed).float()).double().numpy()
    matched = np.abs(np.corrcoef(out.T, sources.T)[:3, 3:]).argmax(1)
    groups = sorted({0: "level", 1: "level", 2: "four", 3: "laplace"}[int(j)] for j in matched)
    assert groups == ["four", "laplace", "level"]  # the factor or its copy, never both
    with pytest.raises(ValueError, match="num_components"):
        ICAReadout(8, 3, num_components=2)
    with pytest.raises(ValueError, match="restarts"):
        ICAReadout(8, 3, restarts=0)


def test_the_encoder_starts_from_the_components_and_trains_them(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=ICA)
    encoder = module.encoder
    features = encoder.features(random_images(24, seed=3))
    encoder.fit_ica(features)
    x = random_images(4)
    with torch.no_grad():
        assert torch.allclose(encoder(x), encoder.ica(encoder.features(x)), atol=1e-6)  # the head adds 0
    assert not encoder.head[-1].weight.any() and not encoder.head[-1].bias.any()
    encoder(x).square().sum().backward()
    assert encoder.ica.linear.weight.grad.abs().sum() > 0 and encoder.head[-1].weight.grad.abs().sum() > 0
    frozen = list(module.first_stage.parameters()) + list(module.denoiser.unet.parameters())
    assert frozen and all(p.grad is None for p in frozen)
    assert {"encoder.ica.linear.weight", "encoder.ica.mean", "encoder.ica.scale", "encoder.ica.fitted"} \
        <= set(module.state_dict())


def test_it_is_fitted_once_at_train_start_and_survives_a_checkpoint(ldm_ckpt, tmp_path):
    module = make_module(ldm_ckpt, encoder_config=ICA)
    assert not bool(module.encoder.ica.fitted)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(ImageBatches(32), batch_size=4))
    assert bool(module.encoder.ica.fitted)
    weight = module.encoder.ica.linear.weight.detach().clone()
    assert not fit_ica_readout(module.encoder, [random_images(32, seed=5)], lambda batch: batch)  # left alone
    assert torch.equal(module.encoder.ica.linear.weight, weight)
    path = save_module_checkpoint(module.eval(), tmp_path / "run" / "checkpoints" / "step=00000001.ckpt")
    loaded = DisDiff.load(path).module
    assert bool(loaded.encoder.ica.fitted)
    x = random_images(3)
    with torch.no_grad():
        assert torch.allclose(loaded.encoder(x), module.encoder(x), atol=1e-6)


def test_the_fit_takes_the_first_process_result_and_keeps_the_random_state(ldm_ckpt):
    encoder = make_module(ldm_ckpt, encoder_config=ICA).encoder
    other = make_module(ldm_ckpt, encoder_config=ICA).encoder
    other.fit_ica(other.features(random_images(24, seed=11)))
    first = {key: value.clone() for key, value in other.state_dict().items()}
    torch.manual_seed(7)
    state = torch.get_rng_state()
    loader = DataLoader(ImageBatches(32), batch_size=4, shuffle=True)
    assert fit_ica_readout(encoder, loader, lambda batch: batch["image"],
                           lambda obj: {key: first[key] for key in obj})  # "process 0" fitted other images
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(encoder.ica.linear.weight, first["ica.linear.weight"])


def test_too_few_training_images_for_the_components_name_the_option(ldm_ckpt):
    encoder = make_module(ldm_ckpt, encoder_config={**ICA, "ica_components": 12}).encoder
    with pytest.raises(ValueError, match=r"ica_components = 12\) needs more than 12 training images, and the "
                                         r"training data gave 10"):
        fit_ica_readout(encoder, [random_images(10, seed=3)], lambda batch: batch)
    assert not bool(encoder.ica.fitted)


def test_config_errors_and_the_deviation_list(ldm_ckpt):
    with pytest.raises(ConfigError, match="ica_init and whiten_features"):
        make_module(ldm_ckpt, encoder_config={**ICA, "whiten_features": True})
    with pytest.raises(ConfigError, match="ica_images must exceed"):
        make_module(ldm_ckpt, encoder_config={**ICA, "ica_images": 2})
    with pytest.raises(ConfigError, match="ica_components"):
        make_module(ldm_ckpt, encoder_config={**ICA, "ica_components": 1})
    assert make_module(ldm_ckpt, encoder_config={**ICA, "ica_components": 14}).encoder.ica.num_components == 14
    assert deviations_in_use({"encoder_config": {**ICA, "ica_components": 12}})["encoder_config.ica_components"] == 12
    with pytest.raises(ConfigError, match="ica_restarts"):
        make_module(ldm_ckpt, encoder_config={**ICA, "ica_restarts": 0})
    assert make_module(ldm_ckpt, encoder_config={**ICA, "ica_restarts": 3}).encoder.ica.restarts == 3
    assert deviations_in_use({"encoder_config": {**ICA, "ica_restarts": 8}})["encoder_config.ica_restarts"] == 8
    used = deviations_in_use({"encoder_config": ICA})
    assert used["encoder_config.ica_init"] is True and used["encoder_config.ica_images"] == 24
    off = deviations_in_use({"encoder_config": {**ICA, "ica_init": False}})
    assert "encoder_config.ica_init" not in off and "encoder_config.ica_images" not in off
