"""DDIM and DDPM (ancestral) samplers, device-agnostic (spec section 3.4).

The model enters as ``eps_fn(x_t, t, coef) -> ε̂`` where ``t`` is a ``(B,)`` long tensor of timestep
indices and ``coef`` a ``(B, 1, 1, 1)`` tensor (one entry per sample; ``(B, 1, …, 1)`` in general)
holding the guidance coefficient of the sampler's current step. Stage 2 ignores it; stage 3 forms
``ε̂ = ε_θ(x_t, t) + coef · G(x_t, z, t)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from disdiff.diffusion.schedule import DiffusionSchedule, extract, predict_x0_from_eps, q_posterior
from disdiff.utils.random import draw

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["ddim_timesteps", "ddim_sample", "ddpm_sample", "EpsFn"]

_COEF_CHOICES = ("ddim", "shift")


def ddim_timesteps(steps: int, T: int = 1000) -> np.ndarray:
    """The DDIM sub-sequence ``τ_i = c·i + 1`` for ``i = 0 … S−1`` with ``c = T // S`` (int64, ascending).

    For S = 200, T = 1000 this is {1, 6, …, 996}, as in the original uniform discretisation.
    When ``S = T`` (c = 1) the "+1" would leave the schedule, so τ = {0, …, T−1} is used instead.
    """
    steps, T = int(steps), int(T)
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in [1, {T}], got {steps}")
    c = T // steps
    tau = np.arange(steps, dtype=np.int64) * c + 1
    if tau[-1] > T - 1:
        tau = tau - 1
    return tau


def _randn(shape, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return draw(torch.randn, shape, generator=generator, device=device, dtype=dtype)


def _progress(iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


def _check_choice(name: str, value: str) -> None:
    if value not in _COEF_CHOICES:
        raise ValueError(f"{name} must be one of {_COEF_CHOICES}, got {value!r}")


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    sched: DiffusionSchedule,
    shape: tuple[int, ...],
    steps: int = 200,
    eta: float = 1.0,
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    guidance_coef: str = "ddim",
    x0_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """DDIM sampling over the uniform sub-sequence :func:`ddim_timesteps` (spec 3.4).

    With ``a_i = ᾱ[τ_i]``, ``a_prev,i = ᾱ[τ_{i−1}]`` (and ``a_prev,0 = ᾱ[0]``, not 1) and
    ``σ_i = η·√((1−a_prev)/(1−a)·(1 − a/a_prev))``, iterating i = S−1 … 0::

        ε̂  = eps_fn(x, τ_i, coef_i)
        x̂0 = (x − √(1−a)·ε̂)/√a                (then x0_fn(x̂0) if given, e.g. VQ quantisation)
        x  ← √a_prev·x̂0 + √(1 − a_prev − σ²)·ε̂ + σ·n,   n ~ N(0, I)

    ``x_T ~ N(0, I)`` unless given. With ``eta = 0`` no noise is drawn after ``x_T`` and the result
    is a deterministic function of ``x_T``. ``guidance_coef`` picks the ``coef`` handed to
    ``eps_fn``: ``"ddim"`` (default, published behaviour) is ``−√(1−a_i)``; ``"shift"`` is the
    training coefficient ``shift_coef[τ_i]``. Noise is drawn from ``generator`` when given.
    """
    _check_choice("guidance_coef", guidance_coef)
    T = sched.num_timesteps
    tau = ddim_timesteps(steps, T)
    if device is None:
        device = x_T.device if x_T is not None else sched.alphas_cumprod.device
    device = torch.device(device)
    dtype = x_T.dtype if x_T is not None else torch.float32

    ac = sched.alphas_cumprod.detach().to("cpu", torch.float64).numpy()
    a = ac[tau]
    a_prev = np.concatenate([ac[:1], ac[tau[:-1]]])
    sigma = eta * np.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
    if guidance_coef == "ddim":
        coefs = -np.sqrt(1.0 - a)
    else:
        coefs = sched.shift_coef.detach().to("cpu", torch.float64).numpy()[tau]

    x = _randn(shape, generator, device, dtype) if x_T is None else x_T.to(device)
    B = x.shape[0]
    bshape = (B,) + (1,) * (x.dim() - 1)
    for i in _progress(reversed(range(len(tau))), progress, "DDIM", len(tau)):
        t = torch.full((B,), int(tau[i]), device=device, dtype=torch.long)
        coef = torch.full(bshape, float(coefs[i]), device=device, dtype=dtype)
        eps = eps_fn(x, t, coef)
        sqrt_a, sqrt_1ma = float(np.sqrt(a[i])), float(np.sqrt(1.0 - a[i]))
        x0 = (x - sqrt_1ma * eps) / sqrt_a
        if x0_fn is not None:
            x0 = x0_fn(x0)
        s = float(sigma[i])
        dir_coef = float(np.sqrt(max(1.0 - a_prev[i] - s * s, 0.0)))
        x = float(np.sqrt(a_prev[i])) * x0 + dir_coef * eps
        if s > 0.0:
            x = x + s * _randn(x.shape, generator, device, dtype)
    return x


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    sched: DiffusionSchedule,
    shape: tuple[int, ...],
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    shift_coefficient: str = "ddim",
    x0_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling over all T steps (spec 3.4).

    For t = T−1 … 0::

        ε̂  = eps_fn(x_t, t, coef_t)
        x̂0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1)·ε̂       (no clipping; then x0_fn(x̂0) if given)
        x_{t−1} = coef1_t·x̂0 + coef2_t·x_t + 𝟙[t>0]·exp(½·log σ̃²_t)·n

    ``shift_coefficient`` picks ``coef_t``: ``"ddim"`` (default) is ``ddim_coef_t = −√(1−ᾱ_t)``,
    which is what the original ancestral sampler used for DisDiff (spec 9.5, kept so that samples
    match the published behaviour); ``"shift"`` is the training coefficient
    ``shift_coef_t = −√α_t(1−ᾱ_{t−1})/√(1−ᾱ_t)``, the one consistent with the reconstruction loss.
    """
    _check_choice("shift_coefficient", shift_coefficient)
    buf = sched.ddim_coef if shift_coefficient == "ddim" else sched.shift_coef
    if device is None:
        device = x_T.device if x_T is not None else sched.alphas_cumprod.device
    device = torch.device(device)
    dtype = x_T.dtype if x_T is not None else torch.float32

    x = _randn(shape, generator, device, dtype) if x_T is None else x_T.to(device)
    B = x.shape[0]
    T = sched.num_timesteps
    for step in _progress(reversed(range(T)), progress, "DDPM", T):
        t = torch.full((B,), step, device=device, dtype=torch.long)
        coef = extract(buf, t, x.shape).to(device=device, dtype=dtype)
        eps = eps_fn(x, t, coef)
        x0 = predict_x0_from_eps(sched, x, t, eps)
        if x0_fn is not None:
            x0 = x0_fn(x0)
        mean, _, log_var = q_posterior(sched, x0, x, t)
        if step > 0:
            x = mean + torch.exp(0.5 * log_var) * _randn(x.shape, generator, device, dtype)
        else:
            x = mean
    return x
