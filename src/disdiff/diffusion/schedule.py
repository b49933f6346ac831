"""Noise schedule of the discrete-time diffusion process and the closed-form maths on it.

Notation (spec section 1.1): ``t ∈ {0, …, T−1}``, ``α_t = 1 − β_t``, ``ᾱ_t = Π_{s≤t} α_s`` and
``ᾱ_{−1} := 1``. Every buffer is indexed by ``t``; :func:`extract` gathers one entry per sample and
reshapes it so that it broadcasts against a ``(B, C, H, W)`` tensor.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "make_beta_schedule",
    "DiffusionSchedule",
    "extract",
    "q_sample",
    "predict_x0_from_eps",
    "q_posterior",
]


def make_beta_schedule(
    kind: str = "linear",
    timesteps: int = 1000,
    linear_start: float = 0.0015,
    linear_end: float = 0.0155,
    cosine_s: float = 8e-3,
) -> np.ndarray:
    """Return the float64 array ``β_0 … β_{T−1}``.

    * ``"linear"`` (the default, and the only one the published configs use) is **sqrt-linear
      spacing**: ``β_t = (√β_start + (√β_end − √β_start)·t/(T−1))²``.
    * ``"sqrt_linear"`` is plain linear spacing: ``β_t = β_start + (β_end − β_start)·t/(T−1)``.
    * ``"sqrt"`` is the square root of the plain linear spacing: ``β_t = √(plain linear)_t``.
    * ``"cosine"`` (Nichol & Dhariwal): ``f(u) = cos²(π/2·(u/T + s)/(1 + s))``,
      ``β_t = min(1 − f(t+1)/f(t), 0.999)``, with ``s = cosine_s``.

    The names follow the original code base, where "linear" and "sqrt_linear" look swapped.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if kind == "linear":
        betas = np.linspace(math.sqrt(linear_start), math.sqrt(linear_end), timesteps, dtype=np.float64) ** 2
    elif kind == "sqrt_linear":
        betas = np.linspace(linear_start, linear_end, timesteps, dtype=np.float64)
    elif kind == "sqrt":
        betas = np.linspace(linear_start, linear_end, timesteps, dtype=np.float64) ** 0.5
    elif kind == "cosine":
        u = np.arange(timesteps + 1, dtype=np.float64) / timesteps + cosine_s
        f = np.cos(u / (1.0 + cosine_s) * math.pi / 2.0) ** 2
        alphas_cumprod = f / f[0]
        betas = np.clip(1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0.0, 0.999)
    else:
        raise ValueError(f"unknown beta schedule {kind!r} (expected linear, sqrt_linear, sqrt or cosine)")
    return np.asarray(betas, dtype=np.float64)


class DiffusionSchedule(nn.Module):
    """All per-timestep coefficients, as float32 buffers (computed in float64, then cast).

    Buffers (each a length-``T`` vector indexed by ``t``):

    * ``betas`` β_t; ``alphas_cumprod`` ᾱ_t; ``alphas_cumprod_prev`` ᾱ_{t−1} (ᾱ_{−1} = 1);
    * ``sqrt_alphas_cumprod`` √ᾱ_t; ``sqrt_one_minus_alphas_cumprod`` √(1−ᾱ_t);
      ``log_one_minus_alphas_cumprod`` log(1−ᾱ_t); ``sqrt_recip_alphas_cumprod`` 1/√ᾱ_t;
      ``sqrt_recipm1_alphas_cumprod`` √(1/ᾱ_t − 1);
    * ``posterior_variance`` σ̃²_t = (1−v)·β_t(1−ᾱ_{t−1})/(1−ᾱ_t) + v·β_t (v = ``v_posterior``);
      ``posterior_log_variance_clipped`` log(max(σ̃²_t, 1e−20));
      ``posterior_mean_coef1`` β_t√ᾱ_{t−1}/(1−ᾱ_t); ``posterior_mean_coef2`` (1−ᾱ_{t−1})√α_t/(1−ᾱ_t);
    * ``shift_coef`` −√α_t·(1−ᾱ_{t−1})/√(1−ᾱ_t)  (PDAE/DisDiff mean-shift coefficient, training);
    * ``ddim_coef`` −√(1−ᾱ_t)  (classifier-guidance coefficient, sampling);
    * ``lvlb_weights`` (not persistent) β_t² / (2σ̃²_t α_t (1−ᾱ_t)), entry 0 replaced by entry 1.
    """

    BUFFER_NAMES = (
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "shift_coef",
        "ddim_coef",
    )

    def __init__(
        self,
        timesteps: int = 1000,
        beta_schedule: str = "linear",
        linear_start: float = 0.0015,
        linear_end: float = 0.0155,
        cosine_s: float = 8e-3,
        v_posterior: float = 0.0,
        betas: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if betas is None:
            betas = make_beta_schedule(beta_schedule, timesteps, linear_start, linear_end, cosine_s)
        betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = int(betas.shape[0])
        self.v_posterior = float(v_posterior)

        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = (1.0 - v_posterior) * betas * (1.0 - ac_prev) / (1.0 - ac) + v_posterior * betas
        values = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
            "shift_coef": -np.sqrt(alphas) * (1.0 - ac_prev) / np.sqrt(1.0 - ac),
            "ddim_coef": -np.sqrt(1.0 - ac),
        }
        for name in self.BUFFER_NAMES:
            self.register_buffer(name, torch.tensor(values[name], dtype=torch.float32))

        with np.errstate(divide="ignore", invalid="ignore"):
            lvlb = betas**2 / (2.0 * post_var * alphas * (1.0 - ac))
        if lvlb.shape[0] > 1:
            lvlb[0] = lvlb[1]
        self.register_buffer("lvlb_weights", torch.tensor(lvlb, dtype=torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return f"num_timesteps={self.num_timesteps}"


def extract(buffer: torch.Tensor, t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Gather ``buffer[t_b]`` for every sample b and reshape to ``(B, 1, …, 1)`` (``len(shape)`` dims).

    ``out[b, 0, …, 0] = buffer[t[b]]``; the result lives on ``buffer``'s device.
    """
    t = t.to(device=buffer.device, dtype=torch.long)
    out = buffer.gather(0, t.reshape(-1))
    return out.reshape(t.shape[0], *([1] * (len(shape) - 1)))


def q_sample(sched: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process sample ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε``."""
    return (
        extract(sched.sqrt_alphas_cumprod, t, x0.shape).to(x0) * x0
        + extract(sched.sqrt_one_minus_alphas_cumprod, t, x0.shape).to(x0) * noise
    )


def predict_x0_from_eps(
    sched: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Invert the forward process: ``x̂0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1)·ε̂`` (no clipping)."""
    return (
        extract(sched.sqrt_recip_alphas_cumprod, t, x_t.shape).to(x_t) * x_t
        - extract(sched.sqrt_recipm1_alphas_cumprod, t, x_t.shape).to(x_t) * eps
    )


def q_posterior(
    sched: DiffusionSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior ``q(x_{t−1} | x_t, x0) = N(μ̃, σ̃²)``.

    ``μ̃ = coef1_t·x0 + coef2_t·x_t`` with ``coef1 = β_t√ᾱ_{t−1}/(1−ᾱ_t)`` and
    ``coef2 = (1−ᾱ_{t−1})√α_t/(1−ᾱ_t)``; returns ``(μ̃, σ̃²_t, log max(σ̃²_t, 1e−20))``, the last two
    shaped ``(B, 1, …, 1)``.
    """
    mean = (
        extract(sched.posterior_mean_coef1, t, x_t.shape).to(x_t) * x0
        + extract(sched.posterior_mean_coef2, t, x_t.shape).to(x_t) * x_t
    )
    var = extract(sched.posterior_variance, t, x_t.shape).to(x_t)
    log_var = extract(sched.posterior_log_variance_clipped, t, x_t.shape).to(x_t)
    return mean, var, log_var
