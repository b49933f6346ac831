"""The DisDiff image encoder ("Encoder4", spec section 4.2), generalised.

Maps an image ``x ∈ [−1, 1]^{C×H×W}`` (the raw image, not an autoencoder latent) to a flat code
``z ∈ R^{N·d}``, read as ``N`` contiguous units of ``d`` dimensions: ``z^k = z[d·k : d·(k+1)]``.
There is no normalisation, noise or KL term on ``z``.

Layers (``w`` = ``width``; BN = BatchNorm2d):

1. conv4×4 s2 p1 (C→w) + BN + ReLU       → H/2
2. conv4×4 s2 p1 (w→w) + BN + ReLU       → H/4
3. conv4×4 s2 p1 (w→w) + BN  (no ReLU)   → H/8
4. conv4×4 s2 p1 (w→w) + BN + ReLU       → H/16
5. ResBlock, 6. BN + ReLU, 7. ResBlock
8. flatten to ``w·(H/16)·(W/16)``; 9. Linear → N·d

ResBlock: ``x + Conv1×1(ReLU(BN(Conv3×3(ReLU(x)))))``. With ``resolution=64``, ``width=128``,
``num_units=6``, ``unit_dim=32`` this is the published encoder (flatten size 2048 → 192); the
flatten size is computed from the resolution instead of being hard-coded.

``unit_branches=True`` (a deviation from the paper, off by default) gives every unit its own
branch of the same layers, ``width`` channels each: the convolutions after the first are grouped
(``groups=N``) and step 9 is one Linear per unit, so unit k is computed from the image by
branch k alone. Units then share no features: a unit that wants a factor another unit has
learned must spend its own capacity on it (docs/EXPERIMENTS.md, session 3).

``stochastic=True`` (a deviation, off by default; set by stage 3's opt-in ``code_kl_weight``) adds
a second head, shaped as step 9, for a per-dimension log-variance: :meth:`encode_distribution`
returns ``(mean, logvar)`` of a diagonal Gaussian code. ``forward`` still returns the mean, so
evaluation, export and sampling read a deterministic code.

``whiten_features=True`` (a deviation, off by default) whitens the flattened trunk features with
running statistics before step 9 (:class:`disdiff.models.feature_whitening.RunningWhitening`), so
that the read-outs meet every feature direction at unit variance (docs/EXPERIMENTS.md, D5, E42).

``standardize_code=True`` (a deviation, off by default) ends the encoder with a BatchNorm1d without
affine parameters over the ``N·d`` code dimensions: every dimension has zero mean and unit variance
over a training batch (running statistics in eval mode). A unit can then neither grow to dominate
the disentangling loss's code differences nor shrink to satisfy its invariance term; it can only
change what it reads (docs/EXPERIMENTS.md, session 7, unit scales of E25 against E27).

``downsamplings`` (4, as published) is the number of stride-2 convolutions; the later ones of the four
become 3x3 stride-1 convolutions that keep the size. The published encoder flattens a 4x4 map of its
64x64 input; at 32x32, ``downsamplings=3`` keeps that 4x4 map (and the resolution need only be a
multiple of 8), where the default leaves 2x2. At an equal number of features the map size did not
change what a linear probe finds of the geometry, and the larger read-outs made the units large
hue mixtures (docs/EXPERIMENTS.md, D9, E52-E53).

``readout_init_scale`` (1: PyTorch's default initialisation, as published) multiplies the initial
weights and bias of the read-out (step 9), so that with a value below 1 every unit starts quiet
(a small code) and grows only as far as the losses reward it (docs/EXPERIMENTS.md, session 7).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from disdiff.models.feature_whitening import RunningWhitening

__all__ = ["ImageEncoder", "EncoderResBlock", "UnitLinear", "split_units"]

#: Number of stride-2 convolutions as published: the feature map is resolution / 16 on each side.
NUM_DOWNSAMPLINGS = 4
#: Initial log-variance of a stochastic code (``stochastic=True``).
LOGVAR_INIT = -2.0


class EncoderResBlock(nn.Module):
    """``x + Conv1×1(ReLU(BN(Conv3×3(ReLU(x)))))`` with a constant channel count."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.bn = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(torch.relu(x))
        h = self.conv1(torch.relu(self.bn(h)))
        return x + h


def _conv(index: int, downsamplings: int, in_channels: int, out_channels: int, groups: int) -> nn.Conv2d:
    """Convolution ``index`` (0-3) of the trunk: 4x4 stride 2 (published) for the first ``downsamplings``."""
    if index < downsamplings:
        return nn.Conv2d(in_channels, out_channels, 4, 2, 1, groups=groups)
    return nn.Conv2d(in_channels, out_channels, 3, 1, 1, groups=groups)


def _resolution_hw(resolution: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return int(resolution), int(resolution)
    values = [int(v) for v in resolution]
    if len(values) != 2:
        raise ValueError(f"resolution must be an int or (H, W), got {resolution!r}")
    return values[0], values[1]


#: The encoder's opt-in deviations from the published Encoder4 (each defaults to the published layer).
OPT_IN_SWITCHES = ("unit_branches", "whiten_features", "standardize_code", "readout_init_scale", "downsamplings")


def encoder_switches_in_use(encoder_config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``encoder_config`` among :data:`OPT_IN_SWITCHES` set away from their published default,
    or, when ``backbone`` is not the published CNN, ``backbone`` and the keys of that encoder
    (:class:`disdiff.models.dpm_feature_encoder.DPMFeatureEncoder`: ``hidden``, ``feature_t``, and its
    switches ``standardize_code``, ``whiten_features``, ``ica_init`` and ``edge_features`` when on, with the
    settings of ``whiten_features`` and ``ica_init``)."""
    if encoder_config.get("backbone", "cnn") != "cnn":
        from disdiff.models.dpm_feature_encoder import CONFIG_KEYS  # not at the top: that module is optional here
        off = {"standardize_code"} if not encoder_config.get("standardize_code") else set()
        if not encoder_config.get("whiten_features"):
            off |= {"whiten_features", "whitening_eps", "whitening_images"}
        if not encoder_config.get("ica_init"):
            off |= {"ica_init", "ica_images", "ica_components", "ica_max_dependence", "ica_restarts"}
        if not encoder_config.get("edge_features"):
            off |= {"edge_features", "edge_source"}
        return {key: value for key, value in encoder_config.items() if key in CONFIG_KEYS and key not in off}
    defaults = inspect.signature(ImageEncoder.__init__).parameters
    return {key: value for key, value in encoder_config.items()
            if key in OPT_IN_SWITCHES and value != defaults[key].default}


def standardized_code(code: torch.Tensor, norm: nn.BatchNorm1d | None, running_code_stats: bool) -> torch.Tensor:
    """``code`` through the opt-in ``standardize_code`` BatchNorm ``norm`` (unchanged when None). With
    ``running_code_stats`` it uses the running statistics even in training mode and does not update
    them: re-encodings of generated images must not be re-centred on their own batch, which would erase
    a shift common to the batch from the code differences."""
    if norm is None:
        return code
    if running_code_stats:
        return F.batch_norm(code, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
    return norm(code)


class ImageEncoder(nn.Module):
    """Encoder4 generalised to any ``N``, ``d``, width and input resolution (a multiple of 2^downsamplings).

    ``forward(x)`` returns the flat code ``(B, N·d)``; :meth:`encode_units` returns ``(B, N, d)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        resolution: int | Sequence[int] = 64,
        width: int = 128,
        num_units: int = 6,
        unit_dim: int = 32,
        unit_branches: bool = False,
        stochastic: bool = False,
        whiten_features: bool = False,
        standardize_code: bool = False,
        readout_init_scale: float = 1.0,
        downsamplings: int = NUM_DOWNSAMPLINGS,
    ) -> None:
        super().__init__()
        height, wide = _resolution_hw(resolution)
        if not 1 <= int(downsamplings) <= NUM_DOWNSAMPLINGS:
            raise ValueError(f"downsamplings must be between 1 and {NUM_DOWNSAMPLINGS}, got {downsamplings}")
        self.downsamplings = int(downsamplings)
        factor = 2**self.downsamplings
        if height % factor or wide % factor or height < factor or wide < factor:
            raise ValueError(f"image encoder resolution must be a positive multiple of {factor}, got {height}x{wide}")
        if num_units < 1 or unit_dim < 1 or width < 1:
            raise ValueError(f"num_units, unit_dim and width must be positive (got {num_units}, {unit_dim}, {width})")
        self.in_channels = int(in_channels)
        self.resolution = (height, wide)
        self.width = int(width)
        self.num_units = int(num_units)
        self.unit_dim = int(unit_dim)
        self.latent_dim = self.num_units * self.unit_dim
        self.unit_branches = bool(unit_branches)
        g = self.num_units if self.unit_branches else 1  # convolution groups: one per branch
        w = self.width * g  # channels of all branches together (branch k: channels [k·width, (k+1)·width))
        self.feature_shape = (w, height // factor, wide // factor)
        self.flatten_dim = w * (height // factor) * (wide // factor)

        # The last (4 - downsamplings) convolutions keep the size (3x3, stride 1) instead of halving it.
        conv = [_conv(i, self.downsamplings, self.in_channels if i == 0 else w, w, 1 if i == 0 else g)
                for i in range(NUM_DOWNSAMPLINGS)]
        self.features = nn.Sequential(
            conv[0],  # each output channel sees the image only: branches stay apart
            nn.BatchNorm2d(w),
            nn.ReLU(),
            conv[1],
            nn.BatchNorm2d(w),
            nn.ReLU(),
            conv[2],
            nn.BatchNorm2d(w),  # no ReLU after the third convolution (as published)
            conv[3],
            nn.BatchNorm2d(w),
            nn.ReLU(),
            EncoderResBlock(w, g),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            EncoderResBlock(w, g),
        )
        if whiten_features and self.unit_branches:
            raise ValueError("whiten_features needs the shared trunk (unit_branches=False)")
        self.whiten = RunningWhitening(self.flatten_dim) if whiten_features else None
        self.fc = self._make_head()
        if not float(readout_init_scale) > 0:
            raise ValueError(f"readout_init_scale must be > 0, got {readout_init_scale}")
        with torch.no_grad():  # x 1.0 (the default) is exact: the published initialisation
            for param in self.fc.parameters():
                param.mul_(float(readout_init_scale))
        self.stochastic = bool(stochastic)
        if standardize_code and self.stochastic:
            raise ValueError("standardize_code cannot be combined with a stochastic code (code_kl_weight > 0)")
        self.code_norm = nn.BatchNorm1d(self.latent_dim, affine=False) if standardize_code else None
        if self.stochastic:
            self.fc_logvar = self._make_head()
            # Start with a small noise (sigma = e^-1) so the code is informative from the first
            # steps; the KL term pulls the variance of the dimensions the decoder does not use up to 1.
            with torch.no_grad():
                for name, param in self.fc_logvar.named_parameters():
                    param.fill_(LOGVAR_INIT if name == "bias" else 0.0)

    def _make_head(self) -> nn.Module:
        if self.unit_branches:
            return UnitLinear(self.num_units, self.flatten_dim // self.num_units, self.unit_dim)
        return nn.Linear(self.flatten_dim, self.latent_dim)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.resolution:
            raise ValueError(
                f"image encoder expects images (B, {self.in_channels}, {self.resolution[0]}, {self.resolution[1]}), "
                f"got {tuple(x.shape)}"
            )
        h = self.features(x)
        if self.unit_branches:
            return h.reshape(h.shape[0], self.num_units, -1)
        h = h.flatten(1)
        return self.whiten(h) if self.whiten is not None else h

    def forward(self, x: torch.Tensor, running_code_stats: bool = False) -> torch.Tensor:
        """The flat code ``(B, N·d)``. With ``standardize_code``, ``running_code_stats=True`` standardises
        it with the running statistics even in training mode, without updating them (for re-encodings
        of generated images, which must not be re-centred on their own batch)."""
        return standardized_code(self.fc(self._features(x)).flatten(1), self.code_norm, running_code_stats)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)``, both ``(B, N·d)``: the diagonal Gaussian code (``stochastic=True`` only)."""
        if not self.stochastic:
            raise RuntimeError("encode_distribution needs an ImageEncoder built with stochastic=True")
        h = self._features(x)
        return self.fc(h).flatten(1), self.fc_logvar(h).flatten(1)

    def encode_units(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)``: the code split into its units."""
        return split_units(self(x), self.num_units)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, resolution={self.resolution}, width={self.width}, "
            f"num_units={self.num_units}, unit_dim={self.unit_dim}, flatten_dim={self.flatten_dim}"
            + (f", downsamplings={self.downsamplings}" if self.downsamplings != NUM_DOWNSAMPLINGS else "")
            + (", unit_branches=True" if self.unit_branches else "")
            + (", stochastic=True" if self.stochastic else "")
            + (", whiten_features=True" if self.whiten is not None else "")
            + (", standardize_code=True" if self.code_norm is not None else "")
        )


class UnitLinear(nn.Module):
    """One Linear per unit: ``(B, N, F) → (B, N, d)``, unit k through its own ``(F, d)`` weights.

    Initialised as ``nn.Linear(F, d)`` is: uniform in ±1/√F for weights and biases.
    """

    def __init__(self, num_units: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = in_features ** -0.5
        self.weight = nn.Parameter(torch.empty(num_units, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_units, out_features).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnf,nfd->bnd", h, self.weight) + self.bias


def split_units(z: torch.Tensor, num_units: int) -> torch.Tensor:
    """Flat ``(B, N·d)`` code → ``(B, N, d)`` (contiguous chunks); ``(B, N, d)`` passes through."""
    if z.dim() == 3:
        if z.shape[1] != num_units:
            raise ValueError(f"expected {num_units} units, got code of shape {tuple(z.shape)}")
        return z
    if z.dim() != 2 or z.shape[1] % num_units:
        raise ValueError(f"cannot split a code of shape {tuple(z.shape)} into {num_units} units")
    return z.reshape(z.shape[0], num_units, z.shape[1] // num_units)
