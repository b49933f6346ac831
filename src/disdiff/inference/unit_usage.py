"""Which units the shift decoder uses: each unit's field size and what it saves in L_r.

For images ``x`` with scaled first-stage latents ``z0``, their codes ``z = E(x)`` (units ``z^k``),
timesteps ``t``, noise ``ε`` and ``x_t = √ᾱ_t z0 + √(1−ᾱ_t) ε`` (one draw shared by every
measurement below):

    field_rms_k = sqrt( mean_{b,c,h,w} G_k(x_t, z^k)² )
    L(z)        = mean_b mean_{c,h,w} ℓ( ε − ε_θ(x_t, t) − c_t Σ_j G_j(x_t, z^j) )
    gain_k      = L(z with unit k's values permuted across the batch) − L(z)

``ℓ`` is the model's reconstruction loss (``l1``: |·|, ``l2``: (·)²) and ``c_t`` its shift
coefficient, as in L_r, but with every unit kept (no nested dropout). A permutation keeps the
unit's marginal distribution and cuts only its tie to the image, so ``gain_k`` is what the decoder
gets from the unit's *information* about the image. A unit whose field is dead (``field_rms_k``
near 0) gains nothing whatever its code holds: in the experiments such a unit never took a new
factor (docs/EXPERIMENTS.md, D13, D16, D19). A unit with a live field and no gain is a copy of
information other units carry.

With ground-truth factors, ``eta2[k, f]`` is the share of unit k's variance that factor f explains
(:func:`disdiff.metrics.probe.variance_explained`), so each unit can be named by its factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from disdiff.diffusion.schedule import extract, q_sample
from disdiff.metrics.probe import variance_explained

__all__ = ["UnitUsage", "unit_usage", "factor_eta2", "measure_unit_usage"]


@dataclass
class UnitUsage:
    """Per-unit figures of one model (see the module docstring for the definitions)."""

    loss: float  #: L(z) with the full code
    code_std: list[float]  #: per unit, sqrt of the summed per-dimension variance of z^k over the images
    field_rms: list[float]
    gain: list[float]
    eta2: np.ndarray | None = None  #: (N, K) variance explained (NaN where not reported), or None
    factor_names: Sequence[str] = field(default_factory=tuple)
    draws: dict[str, Any] = field(default_factory=dict)  #: how the images and t were drawn (n, t_range, seed)

    def record(self) -> dict[str, Any]:
        """JSON-ready: the draws, the full-code loss and :meth:`rows`."""
        return {**self.draws, "loss": self.loss, "units": self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        """One dict per unit (JSON-ready), with its most explained factor when factors were given."""
        largest = max(self.field_rms) if self.field_rms else 0.0
        out = []
        for k, (std, rms, gain) in enumerate(zip(self.code_std, self.field_rms, self.gain)):
            row: dict[str, Any] = {"unit": k, "code_std": std, "field_rms": rms,
                                   "field_share": rms / largest if largest > 0 else 0.0, "gain": gain}
            if self.eta2 is not None:
                finite = np.isfinite(self.eta2[k])
                top = int(np.where(finite, self.eta2[k], -1.0).argmax()) if finite.any() else None
                row["top_factor"] = None if top is None else str(self.factor_names[top])
                row["top_eta2"] = None if top is None else float(self.eta2[k, top])
                row["eta2"] = {str(n): (float(v) if np.isfinite(v) else None)
                               for n, v in zip(self.factor_names, self.eta2[k])}
            out.append(row)
        return out


def _loss(model: Any, z_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, codes: torch.Tensor,
          coef: torch.Tensor) -> tuple[float, torch.Tensor]:
    pred, fields = model.denoiser(z_t, t, codes)
    diff = noise - pred - coef * fields.sum(dim=1)
    per_elem = diff.abs() if model.loss_type == "l1" else diff * diff
    return float(per_elem.flatten(1).mean(1).mean()), fields


@torch.no_grad()
def unit_usage(model: Any, images: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
               perm: torch.Tensor, codes: torch.Tensor | None = None) -> UnitUsage:
    """The figures of the module docstring, without η², for a stage-3 ``DisDiffModule`` used as it is
    (put it in eval mode and load the weights wanted first). ``t``, ``noise`` (shaped as the latents)
    and ``perm`` (a permutation of the batch) are the random draws; ``codes`` (B, N, d), the images'
    codes if the caller has them already (else they are encoded here)."""
    b = images.shape[0]
    if perm.shape != (b,) or not torch.equal(perm.sort().values.cpu(), torch.arange(b)):
        raise ValueError(f"perm must be a permutation of the {b} images")
    if codes is None:
        codes = model.encode_representation(images)  # (B, N, d)
    z0 = model.encode_images(images)
    z_t = q_sample(model.schedule, z0, t, noise)
    coef = extract(model.schedule.shift_coef, t, z_t.shape).to(z_t)
    full, fields = _loss(model, z_t, t, noise, codes, coef)
    gains = []
    for k in range(codes.shape[1]):
        shuffled = codes.clone()
        shuffled[:, k] = codes[perm, k]
        gains.append(_loss(model, z_t, t, noise, shuffled, coef)[0] - full)
    return UnitUsage(loss=full, code_std=_code_std(codes).tolist(),
                     field_rms=fields.pow(2).flatten(2).mean(dim=(0, 2)).sqrt().tolist(), gain=gains)


def _code_std(codes: torch.Tensor) -> torch.Tensor:
    return (codes - codes.mean(dim=0)).pow(2).mean(dim=0).sum(dim=-1).sqrt()


def factor_eta2(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """η² (N, K) of codes (n, N, d) for integer factors (n, K); NaN for a factor with more than n/4
    distinct values among the n images, whose η² would be near 1 whatever a unit holds."""
    eta2 = variance_explained(np.asarray(codes, dtype=np.float64), factors)
    for f in range(factors.shape[1]):
        if len(np.unique(factors[:, f])) > len(codes) // 4:
            eta2[:, f] = np.nan
    return eta2


@torch.no_grad()
def measure_unit_usage(model: Any, dataset: Any, n: int = 512, t_range: tuple[int, int] = (100, 600),
                       seed: int = 0, batch_size: int = 512) -> UnitUsage:
    """:func:`unit_usage` on ``n`` random images of a ground-truth ``dataset``, seeded by ``seed``, with η².

    ``t ~ U[t_range)``: the default 100-600 is where the fields carry most of L_r's gain
    (docs/EXPERIMENTS.md, D2). The images go in batches of at most ``batch_size``, each permuted
    within itself; loss and gains are averaged over the images, the field RMS over all their
    elements; code spread and η² are computed on all the codes at once.
    """
    lo, hi = (int(v) for v in t_range)
    if not 0 <= lo < hi <= model.schedule.num_timesteps:
        raise ValueError(f"t_range must satisfy 0 <= lo < hi <= {model.schedule.num_timesteps}, got {lo},{hi}")
    n = min(int(n), len(dataset))
    if n < 2 or batch_size < 2:
        raise ValueError(f"n (capped at the dataset's size) and batch_size must be at least 2, got {n}, {batch_size}")
    idx = np.sort(np.random.RandomState(seed).choice(len(dataset), size=n, replace=False))
    batches = [idx[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # one image cannot be permuted: join it to the batch before
        batches[-2] = np.concatenate(batches[-2:])
        batches.pop()
    gen = torch.Generator().manual_seed(seed)
    device = model.scale_factor.device
    weights, parts, codes = [], [], []
    for rows in batches:
        x = torch.from_numpy(dataset.images(rows)).float().to(device)
        t = torch.randint(lo, hi, (len(rows),), generator=gen).to(device)
        noise = torch.randn((len(rows), *model.latent_shape), generator=gen).to(device)
        perm = torch.randperm(len(rows), generator=gen).to(device)
        batch_codes = model.encode_representation(x)  # encoded once: for the gains and for spread and η²
        parts.append(unit_usage(model, x, t, noise, perm, codes=batch_codes))
        weights.append(len(rows) / n)
        codes.append(batch_codes.cpu())
    code = torch.cat(codes)
    factors = np.asarray(dataset.factors_of(idx))
    names = tuple(str(name) for name in getattr(dataset, "factor_names", ()))
    return UnitUsage(
        loss=float(sum(w * u.loss for w, u in zip(weights, parts))),
        code_std=_code_std(code).tolist(),
        field_rms=np.sqrt(sum(w * np.square(u.field_rms) for w, u in zip(weights, parts))).tolist(),
        gain=np.sum([w * np.asarray(u.gain) for w, u in zip(weights, parts)], axis=0).tolist(),
        eta2=factor_eta2(code.double().numpy(), factors),
        factor_names=names if len(names) == factors.shape[1] else tuple(f"factor {f}" for f in range(factors.shape[1])),
        draws={"n": n, "t_range": [lo, hi], "seed": seed},
    )
