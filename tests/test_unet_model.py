"""ADM UNet (spec 3.1): layout of the published model, halves, attention, embeddings."""

import math

import pytest
import torch
from torch import nn

from disdiff.models.unet import UNetModel, build_decoder_half, encoder_skip_channels, run_decoder_half
from disdiff.models.unet_blocks import (
    AttentionBlock,
    ConditionedBlock,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    TimestepBlock,
    qkv_attention_legacy,
    timestep_embedding,
)

PUBLISHED = dict(image_size=16, in_channels=3, model_channels=64, out_channels=3, num_res_blocks=2,
                 attention_resolutions=[1, 2, 4], channel_mult=[1, 2, 4, 4], num_heads=8, dropout=0.0,
                 use_scale_shift_norm=True, resblock_updown=True, num_groups=32)
TINY = dict(image_size=8, in_channels=3, model_channels=8, out_channels=3, num_res_blocks=1,
            attention_resolutions=[2], channel_mult=[1, 2], num_heads=2, num_groups=4)




@pytest.fixture(scope="module")
def published():
    torch.manual_seed(0)
    return UNetModel(**PUBLISHED)


def block_signature(block):
    sig = []
    for layer in block:
        if isinstance(layer, ResBlock):
            tag = {"Upsample": "ResUp", "Downsample": "ResDown"}.get(type(layer.h_upd).__name__, "Res")
            sig.append((tag, layer.channels, layer.out_channels))
        elif isinstance(layer, AttentionBlock):
            sig.append(("Attn", layer.channels))
        else:
            sig.append((type(layer).__name__,))
    return sig


def test_published_layout(published):
    assert published.skip_channels == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256]
    assert encoder_skip_channels(64, [1, 2, 4, 4], 2) == published.skip_channels
    inputs = [block_signature(b) for b in published.input_blocks]
    assert inputs == [
        [("Conv2d",)],
        [("Res", 64, 64), ("Attn", 64)], [("Res", 64, 64), ("Attn", 64)], [("ResDown", 64, 64)],
        [("Res", 64, 128), ("Attn", 128)], [("Res", 128, 128), ("Attn", 128)], [("ResDown", 128, 128)],
        [("Res", 128, 256), ("Attn", 256)], [("Res", 256, 256), ("Attn", 256)], [("ResDown", 256, 256)],
        [("Res", 256, 256)], [("Res", 256, 256)],
    ]
    assert block_signature(published.middle_block) == [("Res", 256, 256), ("Attn", 256), ("Res", 256, 256)]
    outputs = [block_signature(b) for b in published.output_blocks]
    assert outputs == [
        [("Res", 512, 256)], [("Res", 512, 256)], [("Res", 512, 256), ("ResUp", 256, 256)],
        [("Res", 512, 256), ("Attn", 256)], [("Res", 512, 256), ("Attn", 256)],
        [("Res", 384, 256), ("Attn", 256), ("ResUp", 256, 256)],
        [("Res", 384, 128), ("Attn", 128)], [("Res", 256, 128), ("Attn", 128)],
        [("Res", 192, 128), ("Attn", 128), ("ResUp", 128, 128)],
        [("Res", 192, 64), ("Attn", 64)], [("Res", 128, 64), ("Attn", 64)], [("Res", 128, 64), ("Attn", 64)],
    ]
    attn = [m for m in published.modules() if isinstance(m, AttentionBlock)]
    assert all(a.num_heads == 8 for a in attn)
    assert all(g.num_groups == 32 for g in published.modules() if isinstance(g, nn.GroupNorm))


def test_published_parameter_count(published):
    E = 256

    def res(ci, co):
        n = 2 * ci + 9 * ci * co + co + E * 2 * co + 2 * co + 2 * co + 9 * co * co + co
        return n + (ci * co + co if ci != co else 0)

    def attn(c):
        return 2 * c + 3 * c * c + 3 * c + c * c + c

    total = 64 * E + E + E * E + E  # time embedding
    total += 9 * 3 * 64 + 64  # input conv
    total += 2 * (res(64, 64) + attn(64)) + res(64, 64)
    total += res(64, 128) + attn(128) + res(128, 128) + attn(128) + res(128, 128)
    total += res(128, 256) + attn(256) + res(256, 256) + attn(256) + res(256, 256)
    total += 2 * res(256, 256)
    total += 2 * res(256, 256) + attn(256)  # middle
    total += 3 * res(512, 256) + res(256, 256)
    total += 2 * (res(512, 256) + attn(256)) + res(384, 256) + attn(256) + res(256, 256)
    total += res(384, 128) + res(256, 128) + res(192, 128) + 3 * attn(128) + res(128, 128)
    total += res(192, 64) + 2 * res(128, 64) + 3 * attn(64)
    total += 2 * 64 + 9 * 64 * 3 + 3  # out
    n = sum(p.numel() for p in published.parameters())
    assert n == total
    assert 25e6 < n < 35e6


def test_published_forward_shape_and_zero_init(published):
    x = torch.randn(1, 3, 16, 16)
    t = torch.tensor([500])
    emb, hs = published.encode(x, t)
    assert emb.shape == (1, 256) and [h.shape[1] for h in hs] == published.skip_channels
    assert [h.shape[-1] for h in hs] == [16, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    out = published.decode(hs, emb)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv


def test_forward_equals_decode_of_encode_and_hs_untouched():
    torch.manual_seed(0)
    m = UNetModel(**TINY)
    for p in m.parameters():  # break the zero init so the output is informative
        nn.init.normal_(p, std=0.2)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 900])
    emb, hs = m.encode(x, t)
    before = [h.clone() for h in hs]
    n = len(hs)
    y = m.decode(hs, emb)
    assert len(hs) == n and all(torch.equal(a, b) for a, b in zip(hs, before))
    torch.testing.assert_close(m(x, t), y)
    torch.testing.assert_close(run_decoder_half(m.middle_block, m.output_blocks, m.out, hs, emb), y)
    assert y.abs().sum() > 0
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_timestep_embedding_cos_first():
    e = timestep_embedding(torch.tensor([0.0, 7.0]), 64)
    assert e.shape == (2, 64)
    assert torch.equal(e[0, :32], torch.ones(32)) and torch.equal(e[0, 32:], torch.zeros(32))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(32) / 32)
    torch.testing.assert_close(e[1], torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)]))
    assert timestep_embedding(torch.tensor([1.0]), 5).shape == (1, 5)


def test_attention_equals_plain_softmax():
    torch.manual_seed(0)
    B, H, c, L = 2, 4, 6, 10
    qkv = torch.randn(B, 3 * H * c, L)
    got = qkv_attention_legacy(qkv, H)
    q, k, v = qkv.reshape(B * H, 3 * c, L).split(c, dim=1)
    s = 1 / math.sqrt(math.sqrt(c))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s).float(), dim=-1)
    ref = torch.einsum("bts,bcs->bct", w, v).reshape(B, -1, L)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    blk = AttentionBlock(8, num_heads=2, num_groups=4)
    x = torch.randn(1, 8, 3, 3)
    assert torch.equal(blk(x), x)  # zero-initialised projection


def test_resblock_scale_shift_and_groupnorm_fp32():
    torch.manual_seed(0)
    blk = ResBlock(8, 16, out_channels=12, num_groups=4)
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 16)
    torch.testing.assert_close(blk(x, emb), blk.skip_connection(x))  # zero-initialised out conv
    nn.init.normal_(blk.out_layers[-1].weight)
    h = blk.in_layers(x)
    scale, shift = blk.emb_layers(emb)[..., None, None].chunk(2, dim=1)
    h = blk.out_layers[0](h) * (1 + scale) + shift
    ref = blk.skip_connection(x) + blk.out_layers[1:](h)
    torch.testing.assert_close(blk(x, emb), ref)
    assert ResBlock(8, 16, up=True, num_groups=4)(x, emb).shape == (2, 8, 8, 8)
    assert ResBlock(8, 16, down=True, num_groups=4)(x, emb).shape == (2, 8, 2, 2)
    gn = GroupNorm32(4, 8)
    xb = torch.randn(2, 8, 4, 4).bfloat16()
    out = gn(xb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), nn.functional.group_norm(xb.float(), 4, gn.weight, gn.bias).bfloat16().float())
    with pytest.raises(ValueError):
        ResBlock(6, 16, num_groups=4)


class _Cond(ConditionedBlock):
    def forward(self, x, emb, cond):
        return x + cond


class _Time(TimestepBlock):
    def forward(self, x, emb):
        return x * emb


def test_embed_sequential_routing():
    seq = EmbedSequential(_Time(), nn.Identity(), _Cond())
    x = torch.ones(2)
    assert torch.equal(seq(x, torch.tensor(3.0), torch.tensor(1.0)), torch.tensor([4.0, 4.0]))


def test_build_decoder_half_with_custom_factory():
    calls = []

    class Rec(ConditionedBlock):
        def __init__(self, ch, out, up):
            super().__init__()
            calls.append((ch, out, up))
            self.inner = ResBlock(ch, 32, out_channels=out, up=up, num_groups=4)

        def forward(self, x, emb, cond):
            return self.inner(x, emb + cond)

    kw = dict(model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[2], num_heads=2,
              dropout=0.0, time_embed_dim=32, out_channels=3, num_groups=4, use_scale_shift_norm=True,
              resblock_updown=True)
    middle, outs, out = build_decoder_half(**kw, make_resblock=lambda c, o, up: Rec(c, o, up))
    assert calls == [(16, 16, False), (16, 16, False), (32, 16, False), (24, 16, False), (16, 16, True),
                     (24, 8, False), (16, 8, False)]
    torch.manual_seed(0)
    unet = UNetModel(**TINY)
    emb, hs = unet.encode(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]))
    y = run_decoder_half(middle, outs, out, hs, emb, cond=torch.zeros(2, 32))
    assert y.shape == (2, 3, 8, 8)
    # the default factory reproduces the UNet's own decoder half
    m2, o2, out2 = build_decoder_half(**unet.decoder_half_kwargs())
    assert [block_signature(b) for b in o2] == [block_signature(b) for b in unet.output_blocks]
    with pytest.raises(ValueError):
        run_decoder_half(middle, outs, out, hs[:-1], emb)
