"""The colour-edge map and the DPM head's opt-in ``edge_features`` input: the map on analytic images, its
colour invariance and gradient, the encoder's feature layout, the training shortcut, and the ICA's
equal weighing of the two feature blocks."""

import numpy as np
import pytest
import torch
from disdiff_support import IMAGE_SIZE, make_module, random_images, randomize_shift_output

from disdiff.config import ConfigError
from disdiff.models.colour_edges import colour_edge_map, num_edge_features
from disdiff.models.dpm_feature_encoder import DPMFeatureEncoder
from disdiff.models.ica_readout import ICAReadout
from disdiff.training.deviations import deviations_in_use

EDGES = {"backbone": "dpm", "hidden": 16, "edge_features": True}


def two_colour_image(left: tuple[float, float, float], right: tuple[float, float, float], size: int = 8,
                     split: int = 3) -> torch.Tensor:
    """(1, 3, size, size): columns 0..split are ``left``, the rest ``right``."""
    x = torch.empty(1, 3, size, size)
    x[..., : split + 1] = torch.tensor(left)[:, None, None]
    x[..., split + 1:] = torch.tensor(right)[:, None, None]
    return x


def test_a_vertical_boundary_gives_one_column_of_unit_edges():
    edges = colour_edge_map(two_colour_image((1.0, -1.0, 0.0), (-1.0, 0.5, 0.0))).reshape(7, 7)
    assert torch.equal(edges[:, 3], torch.ones(7))  # the column whose right neighbour has the other colour
    edges[:, 3] = 0
    assert not edges.any()


def test_the_map_does_not_depend_on_which_two_colours_meet():
    a = colour_edge_map(two_colour_image((1.0, -1.0, 0.0), (-1.0, 0.5, 0.0)))
    b = colour_edge_map(two_colour_image((0.1, 0.2, 0.3), (0.15, 0.2, 0.3)))
    assert torch.allclose(a, b)


def test_a_uniform_image_has_no_edges_and_no_nan():
    edges = colour_edge_map(torch.full((2, 3, 5, 4), 0.3))
    assert edges.shape == (2, num_edge_features(5, 4)) == (2, 12)
    assert torch.equal(edges, torch.zeros(2, 12))


def test_gradients_reach_the_image_and_bad_shapes_are_named():
    x = random_images(2).requires_grad_()
    colour_edge_map(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"expects images \(B, C, H, W\)"):
        colour_edge_map(torch.zeros(3, 8, 8))


def test_the_encoder_appends_the_edge_map_to_the_unet_features(ldm_ckpt):
    plain = make_module(ldm_ckpt, encoder_config={"backbone": "dpm", "hidden": 16}).encoder
    with_edges = make_module(ldm_ckpt, encoder_config=EDGES).encoder
    x = random_images(3)
    with torch.no_grad():
        base, both = plain.features(x), with_edges.features(x)
    width = num_edge_features(IMAGE_SIZE, IMAGE_SIZE)
    assert both.shape == (3, base.shape[1] + width)
    assert torch.allclose(both[:, : base.shape[1]], base) and torch.allclose(both[:, base.shape[1]:], colour_edge_map(x))
    assert with_edges.head[0].normalized_shape == (base.shape[1] + width,)
    # the feature cache must not serve one encoder's features to the other
    assert with_edges.features_fingerprint() != plain.features_fingerprint()
    with pytest.raises(ValueError, match="edge_features: features_of_latent needs the images"):
        with_edges.features_of_latent(torch.zeros(1, 3, 4, 4))


def test_a_training_step_through_the_latent_shortcut_equals_the_direct_one(ldm_ckpt, monkeypatch):
    module = make_module(ldm_ckpt, encoder_config=EDGES, dis_weight=0.5)
    randomize_shift_output(module)
    assert module.encoder.reads_training_latent
    x = random_images(4)

    def losses():
        module.zero_grad(set_to_none=True)
        out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
        out["loss"].backward()
        return out, {n: p.grad.clone() for n, p in module.encoder.named_parameters()}

    shared, shared_grads = losses()
    monkeypatch.setattr(DPMFeatureEncoder, "reads_training_latent", property(lambda self: False))
    direct, direct_grads = losses()
    for key in ("z", "loss", "loss_rec", "loss_dis"):
        assert torch.equal(shared[key], direct[key]), key
    assert all(torch.equal(shared_grads[n], direct_grads[n]) for n in direct_grads)


def test_the_ica_gives_each_block_the_same_total_variance():
    rng = np.random.RandomState(0)
    h = torch.from_numpy(np.concatenate([rng.normal(size=(500, 2)) * 10, rng.normal(size=(500, 8)) * 0.1], 1))
    readout = ICAReadout(10, 2, blocks=(2, 8))
    readout.fit(h)
    standardised = (h - readout.mean.double()) / readout.scale.double()
    assert standardised[:, :2].var(0, unbiased=True).sum().item() == pytest.approx(1.0, rel=1e-6)
    assert standardised[:, 2:].var(0, unbiased=True).sum().item() == pytest.approx(1.0, rel=1e-6)
    # one block: each feature standardised, as before blocks existed
    single = ICAReadout(10, 2)
    single.fit(h)
    assert torch.allclose(single.scale.double(), h.std(0))
    with pytest.raises(ValueError, match="must be positive widths summing to num_features=10"):
        ICAReadout(10, 2, blocks=(2, 7))


def test_the_encoders_ica_weighs_the_unet_block_against_the_edge_block(ldm_ckpt):
    encoder = make_module(ldm_ckpt, encoder_config={**EDGES, "ica_init": True, "ica_images": 24}).encoder
    width = num_edge_features(IMAGE_SIZE, IMAGE_SIZE)
    unet = encoder.head[0].normalized_shape[0] - width
    assert torch.allclose(encoder.ica.block_weight, torch.cat([torch.full((unet,), unet ** 0.5),
                                                               torch.full((width,), width ** 0.5)]))


def test_it_is_listed_as_a_deviation_only_when_on():
    assert deviations_in_use({"encoder_config": EDGES})["encoder_config.edge_features"] is True
    assert "encoder_config.edge_features" not in deviations_in_use({"encoder_config": {**EDGES, "edge_features": False}})


def test_edges_of_the_reconstruction_are_taken_from_the_first_stages_decoding(ldm_ckpt):
    encoder = make_module(ldm_ckpt, encoder_config={**EDGES, "edge_source": "reconstruction"}).encoder
    image_edges = make_module(ldm_ckpt, encoder_config=EDGES).encoder
    x = random_images(3)
    with torch.no_grad():
        latent = encoder.scale_factor * encoder._frozen[0].encode_to_latent(x)
        expected = colour_edge_map(encoder._frozen[0].decode_latent(latent / encoder.scale_factor).clamp(-1, 1))
        got = encoder.features(x)
        assert torch.allclose(got[:, -expected.shape[1]:], expected, atol=1e-6)
        assert torch.allclose(encoder.features_of_latent(latent), got)  # no images needed
    assert encoder.features_fingerprint() != image_edges.features_fingerprint()
    assert deviations_in_use({"encoder_config": {**EDGES, "edge_source": "reconstruction"}})[
        "encoder_config.edge_source"] == "reconstruction"
    with pytest.raises(ConfigError, match="edge_source must be one of image, reconstruction"):
        make_module(ldm_ckpt, encoder_config={**EDGES, "edge_source": "latent"})
