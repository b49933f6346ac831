"""The opt-in ``dis_reencode_latent``: the disentangling loss re-encodes the x0 predictions' latents
instead of their stage-1 decodings (docs/EXPERIMENTS.md, D62). What it computes, that it never decodes
or encodes an image on that path, where its gradient goes, and its config errors."""

import pytest
import torch
from disdiff_support import make_module, random_images, randomize_shift_output

from disdiff.config import ConfigError
from disdiff.diffusion.schedule import predict_x0_from_eps
from disdiff.models.dpm_feature_encoder import clean_latent
from disdiff.training.deviations import Deviations, deviations_in_use

DPM = {"backbone": "dpm", "hidden": 16}
EDGES = [{}, {"edge_features": True, "edge_source": "reconstruction"}]


@pytest.mark.parametrize("edges", EDGES, ids=["no-edges", "reconstruction-edges"])
def test_an_images_own_latent_read_from_the_latent_gives_the_images_code(ldm_ckpt, edges):
    module = make_module(ldm_ckpt, encoder_config={**DPM, **edges})
    encoder = module.encoder
    x = random_images(4)
    with torch.no_grad():
        latent = encoder.scale_factor * clean_latent(module.first_stage, x)
        assert torch.allclose(encoder(latent, from_latent=True), encoder(x), atol=1e-6)


def test_with_image_edges_the_latent_route_takes_the_edges_of_its_reconstruction(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config={**DPM, "edge_features": True, "edge_source": "image"})
    encoder = module.encoder
    latent = torch.randn(3, *module.latent_shape)
    with torch.no_grad():
        expected = encoder.code_from_features(encoder.features_of_latent(latent, encoder.reconstruction(latent)))
        assert torch.allclose(encoder(latent, from_latent=True), expected, atol=1e-6)
        with pytest.raises(ValueError, match="needs the images x"):
            encoder.features_of_latent(latent)  # the image route cannot run without an image


def count_calls(module_to_watch) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, module_to_watch.register_forward_hook(lambda *args: calls.append(1))


@pytest.mark.parametrize("switch", [False, True])
def test_the_loss_re_encodes_the_predicted_latents_and_touches_no_image_on_that_path(ldm_ckpt, switch):
    module = make_module(ldm_ckpt, encoder_config=DPM, dis_weight=0.5, dis_reencode_latent=switch)
    randomize_shift_output(module)
    x = random_images(5)
    decoded, decode_hook = count_calls(module.first_stage.decoder)
    encoded, encode_hook = count_calls(module.first_stage.encoder)
    try:
        out = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
    finally:
        decode_hook.remove()
        encode_hook.remove()
    # The code of x comes from its training latent (one stage-1 encoding). The published path decodes the
    # two x0 predictions and encodes both images again; the switch does neither.
    assert (len(decoded), len(encoded)) == ((0, 1) if switch else (2, 3))
    with torch.no_grad():
        x0 = predict_x0_from_eps(module.schedule, out["z_t"], out["t"], out["pred"])
        reread = module.reencoder(module.encoder, x0, from_latent=True) if switch else \
            module.reencoder(module.encoder, module.decode_latents(x0, quantize=False))
    assert torch.allclose(out["dis"].z_hat.flatten(1), reread, atol=1e-5)


def test_its_gradient_reaches_the_same_parameters_as_the_published_path_and_no_frozen_weight(ldm_ckpt):
    reached = {}
    for switch in (False, True):
        module = make_module(ldm_ckpt, encoder_config=DPM, dis_weight=0.5, dis_reencode_latent=switch)
        randomize_shift_output(module)
        out = module.compute_losses(random_images(5), generator=torch.Generator().manual_seed(0))
        assert out["loss_dis"].item() > 0
        out["loss_dis"].backward()
        frozen = list(module.first_stage.parameters()) + [p for p in module.denoiser.parameters()
                                                          if not p.requires_grad]
        assert frozen and all(p.grad is None for p in frozen)
        reached[switch] = {name for name, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # The shift decoder directly, the encoder through the code that conditions G_c (Ê itself is detached).
    assert any(name.startswith("denoiser.") for name in reached[True])
    assert any(name.startswith("encoder.") for name in reached[True])
    assert reached[True] == reached[False]


def test_it_is_off_by_default_and_listed_when_on():
    assert Deviations().dis_reencode_latent is False
    assert deviations_in_use({"dis_reencode_latent": True}) == {"dis_reencode_latent": True}
    assert deviations_in_use({"dis_reencode_latent": False}) == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder_config": {"width": 8}}, "dis_reencode_latent: true needs an encoder that reads latents.*set model.params.dis_reencode_latent=false"),
    ({"encoder_config": DPM, "dis_loss_type": "IM"}, "dis_reencode_latent needs dis_loss_type: Z"),
])
def test_settings_it_cannot_work_with_name_it(ldm_ckpt, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_module(ldm_ckpt, dis_reencode_latent=True, **kwargs)
