"""Reference implementations the speed benchmarks compare the package against.

* :func:`reference_stage3_loss`: the stage-3 training loss with a plain per-unit Python loop,
  built from the module's own networks (the baseline of the stage-3 speed target);
* :func:`qkv_attention_3d` with :func:`patched_attention`: the attention layout before the fused
  kernel (3-d strided q/k/v, which the CPU dispatcher sends to bmm + softmax).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F


def reference_stage3_loss(module, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                          concept: torch.Tensor) -> torch.Tensor:
    """Stage-3 training loss with a plain per-unit Python loop (the speed baseline).

    Built from the module's own networks and written straight from spec 4.3–4.6: without
    gradient, one frozen UNet pass gives ``emb``, the skips ``hs`` and ``pred``; then for
    k = 0 … N−1 one full shift-decoder pass over the B samples with ``u_k = emb + part_emb(p_k)``
    and ``r_k = repre_embed(z^k)``; ``L = L_r + mean_b dis_b``, all in float32.
    """
    from disdiff.diffusion.schedule import extract, q_sample
    from disdiff.models.disentangling_loss import disentangling_loss
    from disdiff.models.unet import run_decoder_half

    den = module.denoiser
    B = x.shape[0]
    z0 = module.encode_images(x)
    z = module.encode_representation(x)
    z_t = q_sample(module.schedule, z0, t, noise)
    with torch.no_grad():
        emb, hs = den.unet.encode(z_t, t)
        pred = den.unet.decode(hs, emb)
    e = den.part_emb(den.part_latents())
    fields = []
    for k in range(module.num_units):
        u = emb + e[k]
        r = den.repre_embed(z[:, k])
        fields.append(run_decoder_half(den.shift_middle_block, den.shift_output_blocks, den.shift_out, hs, u, r))
    fields = torch.stack(fields, dim=1)
    shift_coef = extract(module.schedule.shift_coef, t, z_t.shape)
    diff = noise - (pred + shift_coef * fields.sum(dim=1))
    per_elem = diff.abs() if module.loss_type == "l1" else diff * diff
    loss = per_elem.flatten(1).mean(1).mean()
    if module.dis_weight > 0:
        dis = disentangling_loss(
            schedule=module.schedule, x_t=z_t, t=t, pred=pred, sub_grad=fields[torch.arange(B), concept], z=z,
            concept=concept, decode=lambda lat: module.decode_latents(lat, quantize=False),
            reencode=lambda imgs: module.reencoder(module.encoder, imgs),
            loss_type=module.dis_loss_type, dis_weight=module.dis_weight,
        )
        loss = loss + dis.loss.mean()
    return loss


def qkv_attention_3d(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The attention before the fused-kernel layout: 3-d (B·H, L, c) strided q/k/v (unfused on CPU)."""
    bs, width, length = qkv.shape
    ch = width // (3 * num_heads)
    q, k, v = qkv.reshape(bs * num_heads, 3 * ch, length).split(ch, dim=1)
    dtype = qkv.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    q, k, v = (u.transpose(1, 2).to(work) for u in (q, k, v))
    with torch.autocast(device_type=qkv.device.type, enabled=False):
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(ch))
    return a.to(dtype).transpose(1, 2).reshape(bs, num_heads * ch, length)


@contextlib.contextmanager
def patched_attention(fn) -> Any:
    import disdiff.models.unet_blocks as unet_mod  # where AttentionBlock looks the function up

    saved = unet_mod.qkv_attention_legacy
    unet_mod.qkv_attention_legacy = fn
    try:
        yield
    finally:
        unet_mod.qkv_attention_legacy = saved
