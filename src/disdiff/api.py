"""Python API for a trained DisDiff run.

    from disdiff.api import DisDiff
    model = DisDiff.load("logs/2024-..._shapes3d-vq-dis")      # a run directory or a .ckpt file
    z = model.encode(images)                                   # (B, N, d)
    x = model.generate(z, steps=50, eta=1.0)                   # (B, C, H, W) in about [-1, 1]
    y = model.swap(a, b, unit=2)                                # a with unit 2 taken from b

Images are float tensors/arrays (B, C, H, W) in [−1, 1], or uint8 arrays (B, H, W, C).
Generation uses the EMA weights of the shift decoder (``use_ema=True``, the default, as the
original's image logging); encoding always uses the live encoder in eval mode (the encoder is
never averaged, spec 1.3), as the representation export does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from disdiff.config import ConfigError
from disdiff.models.image_encoder import split_units

__all__ = ["DisDiff", "resolve_checkpoint"]


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """``(checkpoint file, run directory or None)`` for a run directory or a checkpoint file.

    A run directory resolves to ``checkpoints/last.ckpt``, else its newest ``step=*.ckpt``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        ckpt_dir = p / "checkpoints"
        last = ckpt_dir / "last.ckpt"
        if last.is_file():
            return last, p
        steps = sorted(ckpt_dir.glob("step=*.ckpt"))
        if steps:
            return steps[-1], p
        raise FileNotFoundError(f"{p}: no checkpoints/last.ckpt or checkpoints/step=*.ckpt (is it a run directory?)")
    if p.is_file():
        run = p.parent.parent if p.parent.name == "checkpoints" else None
        return p, run
    raise FileNotFoundError(f"{p}: neither a run directory nor a checkpoint file")


def _as_images(images: Any, device: torch.device) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            if images.ndim == 3:
                images = images[None]
            images = images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected images as a tensor or numpy array, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    return images.to(device=device, dtype=torch.float32)


class DisDiff:
    """A trained DisDiff model ready for inference (eval mode, no gradients)."""

    def __init__(self, module: Any, checkpoint: Path | None = None, run_dir: Path | None = None,
                 global_step: int = 0, use_ema: bool = True) -> None:
        self.module = module.eval()
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        self.global_step = int(global_step)
        self.uses_ema = False
        if use_ema and getattr(module, "ema", None) is not None:
            module.ema.copy_to(module.denoiser)
            self.uses_ema = True
        for p in module.parameters():
            p.requires_grad_(False)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, map_location: Any = "cpu", use_ema: bool = True) -> "DisDiff":
        """Load a run directory (its ``last.ckpt``) or a stage-3 checkpoint file."""
        from disdiff.training.disdiff_module import DisDiffModule
        from disdiff.utils.checkpoints import load_checkpoint_file

        ckpt_path, run_dir = resolve_checkpoint(path)
        ckpt = load_checkpoint_file(ckpt_path, map_location="cpu")
        hp = ckpt.get("hyper_parameters")
        state = ckpt.get("state_dict")
        if not isinstance(hp, dict) or not isinstance(state, dict) or not any(k.startswith("denoiser.") for k in state):
            raise ConfigError(f"{ckpt_path} is not a DisDiff (stage-3) checkpoint")
        try:
            module = DisDiffModule(**hp)
        except TypeError as exc:
            raise ConfigError(f"{ckpt_path}: cannot rebuild DisDiffModule from its hyper-parameters: {exc}") from exc
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"{ckpt_path}: weights do not match the recorded configuration: {exc}") from exc
        module.to(map_location)
        return cls(module, ckpt_path, run_dir, int(ckpt.get("global_step", 0)), use_ema=use_ema)

    # -- properties -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.module.scale_factor.device

    @property
    def num_units(self) -> int:
        return self.module.num_units

    @property
    def unit_dim(self) -> int:
        return self.module.unit_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the encoder takes."""
        enc = self.module.encoder
        return (int(enc.in_channels), *[int(v) for v in enc.resolution])

    def to(self, device: Any) -> "DisDiff":
        self.module.to(device)
        return self

    # -- core operations ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """Representations (B, N, d) of images, encoder in eval mode (BN running statistics)."""
        x = _as_images(images, self.device)
        self.module.eval()
        chunks = [self.module.encode_representation(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        return torch.cat(chunks, dim=0) if chunks else x.new_zeros((0, self.num_units, self.unit_dim))

    def _codes(self, images_or_codes: Any) -> torch.Tensor:
        if isinstance(images_or_codes, torch.Tensor) and images_or_codes.dim() in (2, 3) and (
            images_or_codes.dim() == 3 and tuple(images_or_codes.shape[1:]) == (self.num_units, self.unit_dim)
            or images_or_codes.dim() == 2 and images_or_codes.shape[1] == self.num_units * self.unit_dim
        ):
            return split_units(images_or_codes.to(self.device), self.num_units)
        return self.encode(images_or_codes)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, steps: int = 50, eta: float = 1.0, generator: torch.Generator | None = None,
                 x_T: torch.Tensor | None = None, units: int | torch.Tensor | None = None, seed: int | None = None,
                 progress: bool = False) -> torch.Tensor:
        """DDIM images (B, C, H, W) conditioned on ``z`` (B, N, d), decoded with quantisation.

        ``units`` restricts the conditioning to one unit's field ``G_k`` (partial conditioning).
        """
        from disdiff.inference import generate

        return generate(self.module, split_units(z.to(self.device), self.num_units), steps, eta, generator, x_T,
                        units, seed, progress)

    @torch.no_grad()
    def swap(self, a: Any, b: Any, unit: int, steps: int = 50, eta: float = 1.0,
             generator: torch.Generator | None = None, seed: int | None = None, partial: bool = False) -> torch.Tensor:
        """Images of ``a`` with unit ``unit`` taken from ``b`` (images or codes; ``b`` may be a single one).

        ``partial=True`` generates with only ``b``'s ``G_unit`` added (the partial swap).
        """
        from disdiff.inference import swap_units

        unit = int(unit)
        if not 0 <= unit < self.num_units:
            raise ValueError(f"unit must be in [0, {self.num_units}), got {unit}")
        za, zb = self._codes(a), self._codes(b)
        if zb.shape[0] == 1:
            zb = zb.expand_as(za)
        if partial:
            return self.generate(zb.contiguous(), steps, eta, generator, units=unit, seed=seed)
        return self.generate(swap_units(za, zb, unit), steps, eta, generator, seed=seed)

    @torch.no_grad()
    def swap_grid(self, sources: Any, reference: Any, steps: int = 50, eta: float = 1.0, seed: int = 0,
                  partial: bool = False, progress: bool = False) -> torch.Tensor:
        """(N, M, C, H, W): row k = every source with unit k from the reference (see ``inference.swap_grid``)."""
        from disdiff.inference import swap_grid

        return swap_grid(self.module, self._codes(sources), self._codes(reference)[0], steps, eta, seed, partial,
                         progress=progress)

    @torch.no_grad()
    def traverse(self, image: Any, codes_for_pca: Any, values: Sequence[float] = (-2, -1, 0, 1, 2),
                 steps: int = 50, eta: float = 0.0, seed: int = 0, progress: bool = False) -> torch.Tensor:
        """(N, V, C, H, W): unit k of ``image`` moved along its first PCA direction by v·std for v in values.

        ``codes_for_pca``: codes (M, N, d) (e.g. an export's ``latents``) or images to encode.
        """
        from disdiff.inference import pca_directions, traverse

        codes = codes_for_pca if isinstance(codes_for_pca, np.ndarray) and codes_for_pca.ndim == 3 \
            and codes_for_pca.dtype != np.uint8 else self._codes(codes_for_pca)
        directions, std, _ = pca_directions(codes)
        return traverse(self.module, self._codes(image)[0], directions, std, list(values), steps, eta, seed,
                        progress=progress)
