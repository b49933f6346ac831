"""DisDiff networks: image encoder, part embedding, ResBlockShift, batched shift decoder, coefficients."""

import math

import pytest
import torch

from disdiff.diffusion.schedule import DiffusionSchedule
from disdiff.models.image_encoder import ImageEncoder, split_units
from disdiff.models.part_embedding import PartEmbedding
from disdiff.models.shift_decoder import DisDiffDenoiser, ResBlockShift
from disdiff.models.unet import UNetModel
from disdiff.models.unet_blocks import ConditionedBlock, EmbedSequential


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    unet = UNetModel(image_size=8, in_channels=3, model_channels=8, out_channels=3, num_res_blocks=1,
                     attention_resolutions=[2], channel_mult=[1, 2], num_heads=2, num_groups=4)
    with torch.no_grad():
        for p in unet.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0, 0.05)
    return unet


def tiny_denoiser(num_units=3, unit_dim=4, moved=True, seed=0):
    den = DisDiffDenoiser(tiny_unet(seed), num_units=num_units, unit_dim=unit_dim)
    if moved:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in den.trainable_parameters():
                if p.abs().sum() == 0 and p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return den


# -- image encoder -------------------------------------------------------------------------------
def test_published_encoder_geometry():
    enc = ImageEncoder(in_channels=3, resolution=64, width=128, num_units=6, unit_dim=32)
    assert enc.flatten_dim == 128 * 4 * 4
    assert enc.fc.in_features == 2048 and enc.fc.out_features == 192


@pytest.mark.parametrize("resolution,width,units,dim", [(32, 8, 3, 5), (16, 4, 2, 3), ((32, 16), 4, 4, 2)])
def test_encoder_output_shape_from_config(resolution, width, units, dim):
    enc = ImageEncoder(resolution=resolution, width=width, num_units=units, unit_dim=dim)
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    x = torch.randn(2, 3, h, w)
    assert enc(x).shape == (2, units * dim)
    z = enc.encode_units(x)
    assert z.shape == (2, units, dim)
    # contiguous chunks: unit k is z[d*k : d*(k+1)]
    flat = enc(x)
    assert torch.equal(z[:, 1], flat[:, dim:2 * dim])
    assert torch.equal(split_units(flat, units), z)


@pytest.mark.parametrize("downsamplings,side", [(4, 2), (3, 4), (2, 8), (1, 16)])
def test_encoder_downsamplings_set_the_feature_map(downsamplings, side):
    """Fewer stride-2 convolutions leave a larger map before the flatten (32x32 input: 32 / 2^k);
    the remaining convolutions keep the size, and 4 (the default) is the published encoder."""
    torch.manual_seed(0)
    enc = ImageEncoder(resolution=32, width=8, num_units=3, unit_dim=2, downsamplings=downsamplings)
    assert enc.feature_shape == (8, side, side) and enc.fc.in_features == 8 * side * side
    assert enc._features(torch.randn(2, 3, 32, 32)).shape == (2, 8 * side * side)
    strides = [m.stride[0] for m in enc.features if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2] * downsamplings + [1] * (4 - downsamplings)
    default = ImageEncoder(resolution=32, width=8, num_units=3, unit_dim=2)
    assert default.downsamplings == 4 and default.feature_shape == (8, 2, 2)


def test_encoder_downsamplings_are_checked():
    with pytest.raises(ValueError, match="downsamplings"):
        ImageEncoder(resolution=32, width=8, num_units=3, unit_dim=2, downsamplings=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        ImageEncoder(resolution=20, width=8, num_units=3, unit_dim=2, downsamplings=3)
    # 24 is no multiple of 16 but is one of 8: three halvings fit
    assert ImageEncoder(resolution=24, width=8, num_units=3, unit_dim=2, downsamplings=3).feature_shape == (8, 3, 3)


def test_unit_branches_compute_each_unit_from_its_own_branch_only():
    """With unit_branches, unit k's output depends only on branch k's parameters: the gradient of
    unit k reaches no parameter slice of another branch, and perturbing branch j moves unit j only."""
    torch.manual_seed(0)
    units, dim, width = 3, 2, 4
    enc = ImageEncoder(resolution=16, width=width, num_units=units, unit_dim=dim, unit_branches=True).eval()
    x = torch.randn(5, 3, 16, 16)
    assert enc(x).shape == (5, units * dim) and enc.feature_shape[0] == units * width
    published = ImageEncoder(resolution=16, width=width, num_units=units, unit_dim=dim)
    assert sum(p.numel() for p in enc.parameters()) != sum(p.numel() for p in published.parameters())

    def branch_slice(name: str, param: torch.Tensor, j: int):
        if name.startswith("fc."):
            return param[j]
        return param[j * width:(j + 1) * width]  # output channels of branch j (every conv, BN, bias)

    for k in range(units):
        enc.zero_grad()
        enc.encode_units(x)[:, k].sum().backward()
        for name, param in enc.named_parameters():
            for j in range(units):
                grad = branch_slice(name, param.grad, j)
                if j == k:
                    continue
                assert torch.count_nonzero(grad) == 0, (name, k, j)
    before = enc.encode_units(x).detach()
    with torch.no_grad():
        for name, param in enc.named_parameters():
            branch_slice(name, param, 1).add_(0.1)
    after = enc.encode_units(x).detach()
    assert torch.equal(after[:, 0], before[:, 0]) and torch.equal(after[:, 2], before[:, 2])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_encoder_rejects_bad_resolution_and_input():
    with pytest.raises(ValueError):
        ImageEncoder(resolution=40)
    enc = ImageEncoder(resolution=16, width=4, num_units=2, unit_dim=2)
    with pytest.raises(ValueError, match="expects images"):
        enc(torch.randn(1, 3, 32, 32))


# -- part embedding --------------------------------------------------------------------------------
def test_part_embedding_rows_are_orthonormal_and_released_convention_is_transpose():
    torch.manual_seed(0)
    pe = PartEmbedding(num_units=6, dim=16)
    p = pe()
    assert p.shape == (6, 16)
    assert torch.allclose(p @ p.t(), torch.eye(6), atol=1e-5)
    q = pe.rotation()
    assert torch.allclose(q, torch.linalg.matrix_exp(pe.weight - pe.weight.t()))
    released = PartEmbedding(6, 16, released_convention=True)
    released.load_state_dict(pe.state_dict())
    # exp(-A) = exp(A)^T: the released weights' codes are the columns of Q.
    assert torch.allclose(released.rotation(), q.t(), atol=1e-5)
    assert torch.allclose(released(), q.t()[:6], atol=1e-5)


def test_part_embedding_is_trainable_through_matrix_exp():
    pe = PartEmbedding(num_units=3, dim=8)
    pe().sum().backward()
    assert pe.weight.grad is not None and pe.weight.grad.abs().sum() > 0


# -- ResBlockShift ---------------------------------------------------------------------------------
def test_resblock_shift_applies_both_films_in_order():
    torch.manual_seed(0)
    block = ResBlockShift(8, 16, out_channels=8, num_groups=4, cond_channels=16)
    assert isinstance(block, ConditionedBlock)
    with torch.no_grad():
        block.out_layers[-1].weight.normal_(0, 0.1)
    x, u, r = torch.randn(2, 8, 4, 4), torch.randn(2, 16), torch.randn(2, 16)
    h = block.in_layers(x)
    s_u, b_u = block.emb_layers(u).chunk(2, dim=1)
    s_r, b_r = block.cond_emb_layers(r).chunk(2, dim=1)
    h = block.out_layers[0](h) * (1 + s_u[..., None, None]) + b_u[..., None, None]
    h = h * (1 + s_r[..., None, None]) + b_r[..., None, None]
    expected = x + block.out_layers[1:](h)
    assert torch.allclose(block(x, u, r), expected, atol=1e-6)
    assert torch.allclose(EmbedSequential(block)(x, u, r), expected, atol=1e-6)


# -- shift decoder ---------------------------------------------------------------------------------
def test_shift_decoder_mirrors_the_unet_decoder_half():
    den = tiny_denoiser(moved=False)
    unet = den.unet
    assert len(den.shift_output_blocks) == len(unet.output_blocks)
    n_shift = sum(isinstance(m, ResBlockShift) for m in den.modules())
    n_res = sum(type(m).__name__ == "ResBlock" for m in list(unet.middle_block.modules()) + list(unet.output_blocks.modules()))
    assert n_shift == n_res > 0
    assert den.repre_embed.in_features == 4 and den.repre_embed.out_features == unet.time_embed_dim
    assert den.part_emb.in_features == unet.time_embed_dim // 2 and den.part_emb.out_features == unet.time_embed_dim
    assert tuple(den.part_latents.weight.shape) == (unet.time_embed_dim // 2,) * 2
    assert all(not p.requires_grad for p in unet.parameters())


def test_fields_are_zero_at_initialisation_and_pred_is_the_frozen_unet():
    den = tiny_denoiser(moved=False)
    x, t, z = torch.randn(2, 3, 8, 8), torch.tensor([5, 900]), torch.randn(2, 3, 4)
    pred, g = den(x, t, z)
    assert g.shape == (2, 3, 3, 8, 8)
    assert torch.count_nonzero(g) == 0
    assert torch.allclose(pred, den.unet(x, t))
    assert not pred.requires_grad


def test_batched_unit_pass_equals_per_unit_loop():
    den = tiny_denoiser(num_units=4, unit_dim=3)
    x, t, z = torch.randn(3, 3, 8, 8), torch.tensor([0, 400, 999]), torch.randn(3, 4, 3)
    emb, hs, _ = den.frozen_pass(x, t)
    batched = den.shift_fields(emb, hs, z)
    looped = den.shift_fields_loop(emb, hs, z)
    assert batched.shape == (3, 4, 3, 8, 8)
    assert batched.abs().max() > 1e-3
    assert torch.allclose(batched, looped, atol=1e-5)
    # the single-unit path (partial swap / sampled unit) picks the same fields
    units = torch.tensor([2, 0, 3])
    single = den.shift_fields(emb, hs, z, units)
    assert torch.allclose(single, batched[torch.arange(3), units], atol=1e-5)
    # gradients agree too
    batched.square().sum().backward()
    grads_b = [p.grad.clone() for p in den.trainable_parameters()]
    den.zero_grad()
    den.shift_fields_loop(emb, hs, z).square().sum().backward()
    for gb, p in zip(grads_b, den.trainable_parameters()):
        assert torch.allclose(gb, p.grad, atol=1e-5, rtol=1e-4)


def test_frozen_parts_run_once_per_forward(monkeypatch):
    den = tiny_denoiser()
    calls = {"encode": 0, "decode": 0}
    enc, dec = den.unet.encode, den.unet.decode

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(den.unet, "encode", count("encode", enc))
    monkeypatch.setattr(den.unet, "decode", count("decode", dec))
    den(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.randn(2, 3, 4))
    assert calls == {"encode": 1, "decode": 1}


def test_unit_fields_depend_on_their_own_unit_only():
    den = tiny_denoiser()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([100, 700])
    z = torch.randn(2, 3, 4)
    _, g = den(x, t, z)
    z2 = z.clone()
    z2[:, 1] += 1.0
    _, g2 = den(x, t, z2)
    assert torch.allclose(g[:, 0], g2[:, 0]) and torch.allclose(g[:, 2], g2[:, 2])
    assert not torch.allclose(g[:, 1], g2[:, 1])


def test_eps_composition():
    den = tiny_denoiser()
    x, t, z = torch.randn(2, 3, 8, 8), torch.tensor([10, 600]), torch.randn(2, 3, 4)
    coef = torch.tensor([-0.3, -0.9]).view(2, 1, 1, 1)
    pred, g = den(x, t, z)
    assert torch.allclose(den.eps(x, t, z, coef), pred + coef * g.sum(1), atol=1e-6)
    units = torch.tensor([1, 2])
    assert torch.allclose(den.eps(x, t, z, coef, units), pred + coef * g[torch.arange(2), units], atol=1e-6)


# -- coefficients ------------------------------------------------------------------------------------
def test_shift_and_ddim_coefficients_match_the_spec():
    s = DiffusionSchedule()
    ac = s.alphas_cumprod.double()
    assert float(s.shift_coef[0]) == 0.0
    assert math.isclose(float(s.shift_coef[500]), -0.918, abs_tol=2e-3)
    assert math.isclose(float(s.shift_coef[999]), -0.992, abs_tol=2e-3)
    assert math.isclose(float(s.ddim_coef[0]), -0.039, abs_tol=1e-3)
    assert math.isclose(float(s.ddim_coef[999]), -0.9997, abs_tol=1e-4)
    alphas = 1 - s.betas.double()
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    expected = -alphas.sqrt() * (1 - ac_prev) / (1 - ac).sqrt()
    assert torch.allclose(s.shift_coef.double(), expected, atol=1e-6)
    # shift_coef = -(sqrt(a_t) sqrt(1-abar_t) / beta_t) * posterior variance (the paper's form)
    paper = -(alphas.sqrt() * (1 - ac).sqrt() / s.betas.double()) * s.posterior_variance.double()
    assert torch.allclose(s.shift_coef.double(), paper, atol=1e-5)
    assert torch.allclose(s.ddim_coef.double(), -(1 - ac).sqrt(), atol=1e-6)
