"""Using a trained DisDiff: conditional DDIM generation, unit swaps and PCA traversals (spec section 5).

Every function takes ``model``, any object with the attributes of
:class:`disdiff.training.disdiff_module.DisDiffModule` (``denoiser``, ``schedule``,
``scale_factor``, ``latent_shape``, ``decode_latents``, ``num_units``). Weights are used as they
are: wrap calls in ``model.ema_scope()`` for the EMA shift decoder (the :class:`disdiff.api.DisDiff`
wrapper loads the EMA weights once).

Generation: DDIM over the uniform sub-sequence with ``ε̂ = pred + (−√(1−a_i))·Σ_k G_k(x, z^k)``
(or ``G_k`` of one unit for the partial swap), then decoding **with** VQ quantisation.

Randomness: the grid functions take a ``seed`` and restart a CPU generator from it for every row,
so every row starts from the same ``x_T`` per column and, with ``eta > 0``, also draws the same
per-step noise: rows differ only through the representation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from disdiff.diffusion.sampling import ddim_sample
from disdiff.models.image_encoder import split_units

__all__ = [
    "generate_latents",
    "generate",
    "swap_units",
    "swap_grid",
    "pca_directions",
    "traverse_codes",
    "traverse",
]


def _device(model: Any) -> torch.device:
    return model.scale_factor.device


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device="cpu").manual_seed(int(seed))


@torch.no_grad()
def generate_latents(
    model: Any,
    z: torch.Tensor,
    steps: int = 50,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    x_T: torch.Tensor | None = None,
    units: torch.Tensor | int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM latents (B, C, h, w) conditioned on ``z`` (B, N, d).

    ``units``: ``None`` adds ``Σ_k G_k``; an int or a (B,) tensor adds only that unit's ``G_k``
    (the partial conditioning of the partial swap). ``seed`` builds the generator if none is given.
    """
    device = _device(model)
    z = split_units(z.to(device), model.num_units)
    B = z.shape[0]
    if isinstance(units, int):
        units = torch.full((B,), units, dtype=torch.long, device=device)
    if generator is None:
        generator = _generator(seed)
    denoiser = model.denoiser

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return denoiser.eps(x_t, t, z, coef, units)

    return ddim_sample(eps_fn, model.schedule, (B, *model.latent_shape), steps=int(steps), eta=float(eta), x_T=x_T,
                       generator=generator, progress=progress, device=device)


@torch.no_grad()
def generate(model: Any, z: torch.Tensor, steps: int = 50, eta: float = 1.0, generator: torch.Generator | None = None,
             x_T: torch.Tensor | None = None, units: torch.Tensor | int | None = None, seed: int | None = None,
             progress: bool = False) -> torch.Tensor:
    """Images (B, C, H, W) in about [−1, 1]: :func:`generate_latents`, decoded with quantisation."""
    latents = generate_latents(model, z, steps, eta, generator, x_T, units, seed, progress)
    return model.decode_latents(latents, quantize=True)


def swap_units(z: torch.Tensor, z_ref: torch.Tensor, unit: int) -> torch.Tensor:
    """Copy of ``z`` (B, N, d) whose unit ``unit`` is replaced by ``z_ref``'s ((N, d) or (B, N, d))."""
    z = z.clone()
    z_ref = z_ref.to(z)
    z[:, unit] = z_ref[..., unit, :] if z_ref.dim() == 3 else z_ref[unit]
    return z


@torch.no_grad()
def swap_grid(
    model: Any,
    z: torch.Tensor,
    z_ref: torch.Tensor,
    steps: int = 50,
    eta: float = 1.0,
    seed: int = 0,
    partial: bool = False,
    units: Sequence[int] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The swap grid: (len(units), M, C, H, W) for sources ``z`` (M, N, d) and a reference (N, d).

    Row k, column j: source j with unit k taken from the reference, generated with the full
    ``Σ_k G_k`` (``partial=False``) or — the partial swap — with only the reference's ``G_k``
    added to the unconditional prediction (``partial=True``; the source then plays no role).
    Column j starts from the same ``x_T`` in every row (see the module docstring).
    """
    device = _device(model)
    z = split_units(z.to(device), model.num_units)
    z_ref = z_ref.to(device).reshape(model.num_units, -1)
    rows = []
    for k in (range(model.num_units) if units is None else units):
        k = int(k)
        if partial:
            zk = z_ref.unsqueeze(0).expand_as(z).contiguous()
            rows.append(generate(model, zk, steps, eta, units=k, seed=seed, progress=progress))
        else:
            rows.append(generate(model, swap_units(z, z_ref, k), steps, eta, seed=seed, progress=progress))
    return torch.stack(rows, dim=0)


def pca_directions(codes: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First principal direction of every unit.

    ``codes``: (M, N, d). Returns ``(directions (N, d) unit vectors, std (N,) of the projections,
    mean (N, d))``. The sign of each direction is fixed so that its largest component is positive.
    """
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 3 or codes.shape[0] < 2:
        raise ValueError(f"pca_directions needs codes of shape (M >= 2, N, d), got {codes.shape}")
    M, N, d = codes.shape
    mean = codes.mean(axis=0)
    directions = np.zeros((N, d))
    std = np.zeros(N)
    for k in range(N):
        centred = codes[:, k] - mean[k]
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        v = vt[0]
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        directions[k] = v
        std[k] = s[0] / np.sqrt(max(M - 1, 1))
    return directions.astype(np.float32), std.astype(np.float32), mean.astype(np.float32)


def traverse_codes(z: torch.Tensor, directions: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray,
                   values: Sequence[float], unit: int) -> torch.Tensor:
    """Codes (V, N, d): ``z`` (N, d) with unit ``unit`` moved by ``v·std_k·direction_k`` for each v."""
    directions = torch.as_tensor(np.asarray(directions), dtype=z.dtype, device=z.device)
    std = torch.as_tensor(np.asarray(std), dtype=z.dtype, device=z.device)
    values_t = torch.as_tensor(list(values), dtype=z.dtype, device=z.device)
    out = z.unsqueeze(0).repeat(len(values_t), 1, 1)
    out[:, unit] = z[unit] + values_t[:, None] * std[unit] * directions[unit]
    return out


@torch.no_grad()
def traverse(
    model: Any,
    z: torch.Tensor,
    directions: torch.Tensor | np.ndarray,
    std: torch.Tensor | np.ndarray,
    values: Sequence[float],
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    units: Sequence[int] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Traversal grid (len(units), V, C, H, W) for one code ``z`` (N, d).

    Row k moves unit k along its PCA direction by ``v·std_k`` for every value v. Every cell starts
    from the same ``x_T``; with ``eta = 0`` (the default here) sampling is deterministic, so cells
    differ only through the representation.
    """
    device = _device(model)
    z = z.to(device).reshape(model.num_units, -1)
    gen = _generator(seed)
    x_T = torch.randn((1, *model.latent_shape), generator=gen).to(device).expand(len(values), *model.latent_shape)
    rows = []
    for k in (range(model.num_units) if units is None else units):
        codes = traverse_codes(z, directions, std, values, int(k))
        rows.append(generate(model, codes, steps, eta, x_T=x_T.contiguous(), seed=seed + 1, progress=progress))
    return torch.stack(rows, dim=0)
