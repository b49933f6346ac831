"""Loading a trained stage 2 (a :class:`~disdiff.training.ldm_module.LatentDiffusionModule`
checkpoint) as frozen networks, for stage 3 and for sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from disdiff.config import ConfigError, instantiate_from_config, plain

__all__ = ["load_pretrained_ldm"]


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_pretrained_ldm(ckpt_path: str | Path, use_ema: bool = True, map_location: Any = "cpu") -> dict[str, Any]:
    """Rebuild the trained stage-2 UNet and first stage from a :class:`LatentDiffusionModule` checkpoint.

    Returns ``dict(unet, first_stage, scale_factor, unet_config, first_stage_config,
    first_stage_ckpt, schedule_config, global_step)``. ``unet`` holds the **EMA** weights when
    ``use_ema`` (default) and the raw training weights otherwise; both modules are frozen (eval
    mode, requires_grad False). The first stage is rebuilt from its config and the weights stored
    in the stage-2 checkpoint, so the stage-1 checkpoint file is not needed.
    The file is read with ``torch.load(weights_only=True)``.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"stage-2 (LDM) checkpoint {str(path)!r} not found")
    from disdiff.utils.checkpoints import load_checkpoint_file

    try:
        ckpt = load_checkpoint_file(path, map_location=map_location)  # torch.load(weights_only=True)
    except ConfigError as exc:
        raise ConfigError(f"cannot read stage-2 checkpoint {str(path)!r}: {exc}") from exc
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if (
        not isinstance(hp, Mapping) or not isinstance(state, Mapping)
        or "unet_config" not in hp or "first_stage_config" not in hp
        or "scale_factor" not in state or not any(k.startswith("unet.") for k in state)
    ):
        raise ConfigError(
            f"{str(path)!r} is not a stage-2 checkpoint (expected a LatentDiffusionModule checkpoint with "
            "hyper_parameters.unet_config/first_stage_config and unet.* / scale_factor weights)"
        )
    unet_config = plain(hp["unet_config"])
    first_stage_config = plain(hp["first_stage_config"])

    unet = instantiate_from_config(unet_config)
    unet_state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    if use_ema:
        missing = []
        for name, _ in unet.named_parameters():
            key = "ema." + name.replace(".", "__")
            if key not in state:
                missing.append(name)
            else:
                unet_state[name] = state[key]
        if missing:
            raise ConfigError(
                f"stage-2 checkpoint {str(path)!r} holds no EMA weights for {len(missing)} UNet parameters "
                f"(e.g. {missing[0]!r}); it was trained with use_ema=False — load it with use_ema=False"
            )
    try:
        unet.load_state_dict(unet_state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"stage-2 checkpoint {str(path)!r}: UNet weights do not match its unet_config: {exc}") from exc
    _freeze(unet)

    fs_state = {k[len("first_stage."):]: v for k, v in state.items() if k.startswith("first_stage.")}
    if fs_state:
        first_stage = instantiate_from_config(first_stage_config)
        try:
            first_stage.load_state_dict(fs_state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"stage-2 checkpoint {str(path)!r}: first-stage weights do not match its config: {exc}") from exc
        from disdiff.models.autoencoder import freeze_first_stage

        first_stage = freeze_first_stage(first_stage)
    else:  # checkpoints written by this module always hold the first stage; others name its file
        from disdiff.models.autoencoder import load_first_stage

        try:
            first_stage = load_first_stage(first_stage_config, hp.get("first_stage_ckpt"))
        except ConfigError as exc:
            raise ConfigError(f"stage-2 checkpoint {str(path)!r} holds no first-stage weights, and its stage-1 "
                              f"checkpoint cannot be used: {exc}") from exc

    schedule_config = {
        k: hp[k] for k in ("timesteps", "beta_schedule", "linear_start", "linear_end") if k in hp
    }
    return dict(
        unet=unet,
        first_stage=first_stage,
        scale_factor=float(state["scale_factor"]),
        unet_config=unet_config,
        first_stage_config=first_stage_config,
        first_stage_ckpt=hp.get("first_stage_ckpt"),
        schedule_config=schedule_config,
        global_step=int(ckpt.get("global_step", 0)),
    )
