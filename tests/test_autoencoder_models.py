"""Stage-1 networks: shapes, quantiser maths, straight-through gradients, KL posterior, PatchGAN."""

from __future__ import annotations

import pytest
import torch

from disdiff.models.autoencoder import (
    AutoencoderKL,
    Decoder,
    DiagonalGaussianDistribution,
    Encoder,
    VectorQuantizer,
    VQModel,
)
from disdiff.models.autoencoder.blocks import AttnBlock, Downsample, ResnetBlock, Upsample
from disdiff.models.autoencoder.discriminator import NLayerDiscriminator

TINY = dict(ch=8, out_ch=3, ch_mult=[1, 2, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
            in_channels=3, resolution=64, z_channels=3, double_z=False, num_groups=4)


def test_encoder_decoder_shapes_64_to_16():
    torch.manual_seed(0)
    enc, dec = Encoder(**TINY), Decoder(**TINY)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        z = enc(x)
        assert z.shape == (1, 3, 16, 16)
        assert dec(z).shape == (1, 3, 64, 64)
        enc2 = Encoder(**dict(TINY, double_z=True, z_channels=4))
        assert enc2(x).shape == (1, 8, 16, 16)


def test_encoder_structure_follows_spec():
    enc = Encoder(**dict(TINY, num_res_blocks=2))
    dec = Decoder(**dict(TINY, num_res_blocks=2))
    assert [len(level.block) for level in enc.down] == [2, 2, 2]
    assert [len(level.block) for level in dec.up] == [3, 3, 3]
    assert isinstance(enc.down[0].resample, Downsample) and isinstance(enc.down[2].resample, torch.nn.Identity)
    assert isinstance(dec.up[0].resample, Upsample) and isinstance(dec.up[2].resample, torch.nn.Identity)
    assert isinstance(enc.mid.attn_1, AttnBlock)  # middle attention even with attn_resolutions empty
    assert enc.norm_out.num_groups == 4 and enc.norm_out.eps == 1e-6
    with_attn = Encoder(**dict(TINY, attn_resolutions=[16]))
    assert len(with_attn.down[2].attn) == 1 and len(with_attn.down[0].attn) == 0


def test_blocks():
    x = torch.randn(1, 8, 9, 9)
    down = Downsample(8)
    x8 = torch.randn(1, 8, 8, 8)
    assert down(x8).shape == (1, 8, 4, 4)
    manual = torch.nn.functional.conv2d(torch.nn.functional.pad(x8, (0, 1, 0, 1)), down.conv.weight, down.conv.bias, stride=2)
    assert torch.allclose(down(x8), manual)  # zero pad on the right and bottom only, no conv padding
    assert Upsample(8)(x).shape == (1, 8, 18, 18)
    block = ResnetBlock(8, 16, num_groups=4)
    assert isinstance(block.nin_shortcut, torch.nn.Conv2d) and block(x).shape == (1, 16, 9, 9)
    with pytest.raises(ValueError, match="groups"):
        ResnetBlock(6, 6, num_groups=4)


def test_quantizer_init_and_nearest_assignment():
    q = VectorQuantizer(n_e=16, e_dim=2)
    assert q.embedding.weight.abs().max() <= 1 / 16
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[float(i), -float(i)] for i in range(16)]))
    z = torch.tensor([[3.2, -2.9], [0.4, 0.1], [9.7, -9.6], [-5.0, 5.0]])  # rows -> (B=1, C=2, H=1, W=4)
    z = z.t().reshape(1, 2, 1, 4)
    z_q, _, idx = q(z)
    assert idx.tolist() == [[[3, 0, 10, 0]]]
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.equal(idx.flatten(), torch.cdist(flat, q.embedding.weight).argmin(dim=1))
    assert torch.allclose(z_q, q.embedding.weight[idx.flatten()].t().reshape(1, 2, 1, 4))


def test_codebook_loss_formula_and_legacy_gradients():
    torch.manual_seed(0)
    q = VectorQuantizer(n_e=4, e_dim=3, beta=0.25, legacy=True)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(4, 3))
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q, loss, idx = q(z)
    e = q.embedding.weight.detach()[idx].permute(0, 3, 1, 2)
    mse = ((e - z.detach()) ** 2).mean()
    assert torch.allclose(loss, 1.25 * mse)
    loss.backward()
    n = z.numel()
    # legacy: the commitment-like term (weight 1) moves z, beta weights the codebook update
    assert torch.allclose(z.grad, 2 * (z.detach() - e) / n, atol=1e-6)
    expected_cb = torch.zeros(4, 3)
    flat_idx = idx.flatten()
    diff = (e - z.detach()).permute(0, 2, 3, 1).reshape(-1, 3)
    expected_cb.index_add_(0, flat_idx, 0.25 * 2 * diff / n)
    assert torch.allclose(q.embedding.weight.grad, expected_cb, atol=1e-6)
    q2 = VectorQuantizer(n_e=4, e_dim=3, beta=0.25, legacy=False)
    q2.load_state_dict(q.state_dict())
    z2 = z.detach().clone().requires_grad_(True)
    q2(z2)[1].backward()
    assert torch.allclose(z2.grad, 0.25 * 2 * (z.detach() - e) / n, atol=1e-6)


def test_vq_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    model = VQModel(dict(TINY, resolution=32), embed_dim=3, n_embed=32)
    x = torch.randn(2, 3, 32, 32)
    xrec, codebook_loss = model(x)
    assert xrec.shape == x.shape and codebook_loss.dim() == 0
    xrec.abs().mean().backward()
    assert model.encoder.conv_in.weight.grad is not None
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quant_conv.weight.grad.abs().sum() > 0


def test_vq_contract_encode_decode_quantize_flag():
    torch.manual_seed(0)
    model = VQModel(dict(TINY, resolution=32), embed_dim=3, n_embed=32).eval()
    assert model.latent_channels == 3 and model.downsample_factor == 4
    assert model.last_layer is model.decoder.conv_out.weight
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        z = model.encode_to_latent(x)
        assert z.shape == (1, 3, 8, 8)
        assert torch.equal(z, model.quant_conv(model.encoder(x)))  # pre-quantisation
        z_q = model.quantize(z)[0]
        assert not torch.allclose(z, z_q)
        assert torch.allclose(model.decode_latent(z), model.decoder(model.post_quant_conv(z_q)))
        assert torch.allclose(model.decode_latent(z, quantize=False), model.decoder(model.post_quant_conv(z)))
        assert not torch.allclose(model.decode_latent(z), model.decode_latent(z, quantize=False))
    # without quantisation the decode path is differentiable w.r.t. the latent
    zg = z.clone().requires_grad_(True)
    model.decode_latent(zg, quantize=False).sum().backward()
    assert zg.grad.abs().sum() > 0


def test_kl_model_and_posterior():
    torch.manual_seed(0)
    cfg = dict(TINY, z_channels=4, double_z=True, resolution=32)
    model = AutoencoderKL(cfg, embed_dim=4)
    assert model.latent_channels == 4 and model.downsample_factor == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        xrec, posterior = model(x)
        z = model.encode_to_latent(x)
    assert xrec.shape == x.shape and isinstance(posterior, DiagonalGaussianDistribution)
    assert z.shape == (2, 4, 8, 8)
    assert torch.allclose(model.decode_latent(z, quantize=True), model.decode_latent(z, quantize=False))
    with pytest.raises(ValueError):
        AutoencoderKL(TINY, embed_dim=4)


def test_diagonal_gaussian_kl_formula_and_clamp():
    mean = torch.tensor([0.5, -1.0]).reshape(1, 2, 1, 1)
    logvar = torch.tensor([0.2, -50.0]).reshape(1, 2, 1, 1)
    post = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
    assert post.logvar.flatten().tolist()[1] == -30.0
    lv = torch.tensor([0.2, -30.0])
    expected = 0.5 * ((mean.flatten() ** 2) + lv.exp() - 1 - lv).sum()
    assert torch.allclose(post.kl(), expected.reshape(1))
    s = post.sample(generator=torch.Generator().manual_seed(0))
    eps = torch.randn(1, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s, mean + torch.exp(0.5 * post.logvar) * eps)
    assert torch.equal(post.mode(), mean)


def test_discriminator_shapes_and_init():
    torch.manual_seed(0)
    d = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=3)
    with torch.no_grad():
        assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
        assert d(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert len(bns) == 3 and all(float(b.bias.detach().abs().max()) == 0 for b in bns)
    big = NLayerDiscriminator()
    w = torch.cat([m.weight.detach().flatten() for m in big.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.std()) - 0.02) < 0.002
