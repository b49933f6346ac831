"""A penalty on two units' shift fields pointing the same way (opt-in ``field_alignment_weight``,
a deviation from the paper).

Why (docs/EXPERIMENTS.md, D25 and "what the evidence says after session 20"): spare units become
copies of a hue because a copy's field adds to the field of the unit it copies and lowers L_r. The
disentangling loss acts on a copy only through its sample weight ``w_b ∝ G²``, which is small while
the copy is young, and the penalties on the *codes* (correlation, kernel dependence, total
correlation; E34-E57) removed the copies' statistics but left them hue mixtures. This term looks at
what a copy *does*: on the same sample, two units that hold the same factor push the latent the same
way (floor and wall fields touch different pixels, and so are nearly orthogonal). The penalty is
scale-free, so a young copy pays as much as a grown one, and a unit whose field is orthogonal to every
other unit's can lower L_r only through what no other unit renders.

Definition, for per-unit fields ``G`` of shape ``(B, N, …)`` (``G[b, k]`` is unit k's field on sample
b): with ``g_bk = G[b, k]`` flattened,

    cos_b(i, j) = ⟨g_bi, g_bj⟩ / sqrt((‖g_bi‖² + ε)(‖g_bj‖² + ε)),
    alignment = mean over b and over unordered pairs i < j of cos_b(i, j)².

0 for fields orthogonal on every sample, 1 for fields parallel (or anti-parallel) on every sample;
two independent random directions in D dimensions give about ``1 / D``. ``ε`` keeps a dead field
(``G = 0``, as every field is at initialisation, the output layer being zero) at cosine 0 with no
gradient blow-up.
"""

from __future__ import annotations

import torch

__all__ = ["field_cosines", "cross_unit_field_alignment"]


def field_cosines(fields: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(B, N, N)`` per-sample cosines between the units' fields ``(B, N, …)`` (module docstring)."""
    if fields.dim() < 3:
        raise ValueError(f"fields must have shape (B, N, ...), got {tuple(fields.shape)}")
    flat = fields.flatten(2)
    gram = flat @ flat.transpose(1, 2)
    norms = torch.diagonal(gram, dim1=1, dim2=2) + eps
    return gram / torch.sqrt(norms[:, :, None] * norms[:, None, :])


def cross_unit_field_alignment(fields: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over samples and unit pairs ``i < j`` of the squared field cosine (module docstring): a scalar."""
    N = fields.shape[1] if fields.dim() >= 2 else 0
    if N < 2:
        raise ValueError(f"field alignment needs at least 2 units, got fields of shape {tuple(fields.shape)}")
    cos = field_cosines(fields, eps)
    i, j = torch.triu_indices(N, N, offset=1, device=fields.device)
    return cos[:, i, j].square().mean()
