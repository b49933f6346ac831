"""Stage-1 autoencoders (VQ and KL), their losses, and loading a frozen first stage for stages 2/3."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from disdiff.config import ConfigError, instantiate_from_config

from .encoder_decoder import Decoder, Encoder
from .kl import AutoencoderKL, DiagonalGaussianDistribution
from .quantizer import VectorQuantizer
from .vq import VQModel

__all__ = [
    "AutoencoderKL",
    "Decoder",
    "DiagonalGaussianDistribution",
    "Encoder",
    "VQModel",
    "VectorQuantizer",
    "extract_autoencoder_state_dict",
    "freeze_first_stage",
    "load_first_stage",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "autoencoder."


def _disabled_train(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement for ``train()`` on a frozen first stage: it stays in eval mode."""
    return self


def freeze_first_stage(model: nn.Module) -> nn.Module:
    """Eval mode, requires_grad False everywhere, and ``train()`` made a no-op."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.train = _disabled_train.__get__(model)  # type: ignore[method-assign]
    return model


def extract_autoencoder_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The autoencoder weights of a stage-1 checkpoint.

    Accepts a Lightning checkpoint (``{"state_dict": {"autoencoder.<key>": ...,
    "loss.<key>": ...}}``) or a bare state dict, with or without the ``autoencoder.`` prefix.
    Loss/discriminator/LPIPS entries are dropped.
    """
    state = checkpoint
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise TypeError("checkpoint holds no state dict")
    if any(k.startswith(CHECKPOINT_PREFIX) for k in state):
        return {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith("loss.")}


def latent_shape_of(config: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(C, h, w) of the latents a VQ/KL first-stage config makes from its ``ddconfig.resolution`` images."""
    params = (config or {}).get("params") or {}
    dd = params.get("ddconfig") or {}
    if params.get("embed_dim") is None or dd.get("resolution") is None or not dd.get("ch_mult"):
        return None
    size = int(dd["resolution"]) // 2 ** (len(dd["ch_mult"]) - 1)
    return int(params["embed_dim"]), size, size


def _check_recorded_geometry(config: Mapping[str, Any], checkpoint: Any, path: Path) -> None:
    """A stage-1 checkpoint of this package records its config: its images and latents must be the configured ones."""
    hp = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    recorded = hp.get("autoencoder_config") if isinstance(hp, Mapping) else None
    if not isinstance(recorded, Mapping):
        return
    theirs, ours = latent_shape_of(recorded), latent_shape_of(config)
    res_theirs = ((recorded.get("params") or {}).get("ddconfig") or {}).get("resolution")
    res_ours = ((config.get("params") or {}).get("ddconfig") or {}).get("resolution")
    if theirs is not None and ours is not None and (theirs != ours or res_theirs != res_ours):
        raise ConfigError(
            f"first-stage checkpoint {str(path)!r} was trained on {res_theirs}x{res_theirs} images with latents "
            f"{'x'.join(map(str, theirs))}, but first_stage_config describes {res_ours}x{res_ours} images with latents "
            f"{'x'.join(map(str, ours))}; use the stage-1 run's own autoencoder config"
        )


def load_first_stage(config: Mapping[str, Any], ckpt_path: str | Path | None) -> nn.Module:
    """Build the autoencoder of a ``target``/``params`` block and load stage-1 weights.

    Returns the module frozen (see ``freeze_first_stage``). ``ckpt_path=None`` keeps the random
    initialisation (useful only for tests). Raises ConfigError for a missing/unreadable file and for
    missing, unexpected or shape-mismatched keys (e.g. a VQ checkpoint given to a KL config, or a
    different latent size).
    """
    model = instantiate_from_config(config)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"first-stage target {config.get('target')!r} did not build an nn.Module")
    if ckpt_path is None:
        logger.warning("load_first_stage: no checkpoint given, the first stage keeps its random initialisation")
        return freeze_first_stage(model)

    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"first-stage checkpoint {str(path)!r} not found")
    from disdiff.utils.checkpoints import load_checkpoint_file

    try:
        checkpoint = load_checkpoint_file(path)  # torch.load(weights_only=True), one-line errors
        state = extract_autoencoder_state_dict(checkpoint)
    except Exception as exc:
        raise ConfigError(f"cannot read first-stage checkpoint {str(path)!r}: {exc}") from exc

    _check_recorded_geometry(config, checkpoint, path)
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs config {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    problems = []
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(mismatched[:8]) + (" ..." if len(mismatched) > 8 else ""))
    if missing:
        problems.append(f"missing keys {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}" + (" ..." if len(unexpected) > 8 else ""))
    if problems:
        latent = latent_shape_of(config)
        made = f" (which makes latents {'x'.join(map(str, latent))})" if latent else ""
        raise ConfigError(
            f"first-stage checkpoint {str(path)!r} does not match the config {config.get('target')!r}{made}: "
            + " | ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return freeze_first_stage(model)
