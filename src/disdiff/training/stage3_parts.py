"""Building stage 3's parts: the frozen stages 1-2 it sits on, and its image encoder.

Kept apart from :mod:`disdiff.training.disdiff_module` (the losses and the training loop) because
none of this is DisDiff's mathematics: it is where the frozen networks come from (a stage-2
checkpoint for a new run, the recorded configs for a trained one) and how the encoder's input
geometry is checked against the first stage's images.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from disdiff.config import ConfigError, instantiate_from_config, plain
from disdiff.models.disentangling_loss import DIS_LOSS_TYPES, REENCODER_BN_MODES
from disdiff.models.dpm_feature_encoder import CONFIG_KEYS as DPM_ENCODER_KEYS, DPMFeatureEncoder
from disdiff.models.image_encoder import ImageEncoder
from disdiff.training.deviations import Deviations

log = logging.getLogger(__name__)

#: ``encoder_config.backbone``: the published CNN on images, or (opt-in) a head on the frozen networks' features.
ENCODER_BACKBONES = ("cnn", "dpm")
#: The ``encoder_config`` keys of the CNN image encoder (``num_units``/``unit_dim`` belong to ``model.params``).
CNN_ENCODER_KEYS = frozenset(inspect.signature(ImageEncoder.__init__).parameters) - {"self", "num_units", "unit_dim"}

__all__ = ["resolve_ldm_checkpoint", "load_frozen_stages", "build_image_encoder", "check_stage3_options"]


def resolve_ldm_checkpoint(path: str | Path | None) -> Path:
    """A stage-2 checkpoint file, or a stage-2 run directory (→ ``checkpoints/last.ckpt``)."""
    if path is None or str(path) in ("", "???", "None"):
        raise ConfigError("model.params.ldm_ckpt is not set: give the stage-2 (LDM) run directory or checkpoint")
    p = Path(str(path))
    if p.is_dir():
        candidate = p / "checkpoints" / "last.ckpt"
        if not candidate.is_file():
            raise ConfigError(f"stage-2 run directory {str(p)!r} has no checkpoints/last.ckpt")
        return candidate
    if not p.is_file():
        raise ConfigError(f"stage-2 (LDM) checkpoint {str(p)!r} not found")
    return p


def load_frozen_stages(ldm_ckpt: str | None, use_ema_unet: bool,
                       stage2: dict | None) -> tuple[nn.Module, nn.Module, dict]:
    """``(unet, first_stage, stage2)``: the frozen stage-2 UNet and first stage, and their record.

    A new run (``stage2`` None) loads them from ``ldm_ckpt`` (EMA UNet weights when
    ``use_ema_unet``) and returns the record to store in the hyper-parameters: the source, the
    configs and the scale factor. A trained run passes that record back, and only the
    architectures are built here; their weights come with the stage-3 state dict.
    """
    if stage2 is not None:
        from disdiff.models.autoencoder import freeze_first_stage

        unet = instantiate_from_config(stage2["unet_config"])
        first_stage = freeze_first_stage(instantiate_from_config(stage2["first_stage_config"]))
        return unet, first_stage, stage2
    from disdiff.training.ldm_loading import load_pretrained_ldm

    ckpt_path = resolve_ldm_checkpoint(ldm_ckpt)
    loaded = load_pretrained_ldm(ckpt_path, use_ema=bool(use_ema_unet))
    record = {
        "source": str(ckpt_path),
        "use_ema": bool(use_ema_unet),
        "global_step": int(loaded.get("global_step", 0)),
        "scale_factor": float(loaded["scale_factor"]),
        "unet_config": plain(loaded["unet_config"]),
        "first_stage_config": plain(loaded["first_stage_config"]),
        "schedule_config": plain(loaded.get("schedule_config", {}) or {}),
    }
    log.info("DisDiff: stage 2 loaded from %s (%s UNet weights, scale_factor %.6g)", ckpt_path,
             "EMA" if use_ema_unet else "raw", record["scale_factor"])
    return loaded["unet"], loaded["first_stage"], record


def first_stage_geometry(first_stage_config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(image resolution, image channels) recorded in a first-stage config, if any."""
    params = first_stage_config.get("params", {}) or {}
    dd = params.get("ddconfig", {}) or {}
    res = dd.get("resolution")
    ch = dd.get("in_channels")
    return (int(res) if res is not None else None, int(ch) if ch is not None else None)


def build_image_encoder(encoder_config: dict, first_stage_config: Mapping[str, Any], num_units: int,
                        unit_dim: int, stochastic: bool = False,
                        frozen: tuple[nn.Module, nn.Module, float] | None = None) -> nn.Module:
    """The image encoder of ``encoder_config``, checked against the first stage's images.

    A ``target``/``params`` block builds a custom encoder as given; ``backbone: dpm`` (opt-in) a
    :class:`DPMFeatureEncoder` on ``frozen`` = (first stage, UNet, scale factor), configured by the keys
    ``hidden`` and ``feature_t`` (the CNN's keys, which a config merged over the published one
    carries, are ignored with a warning, except ``resolution`` and ``in_channels``, which are checked);
    otherwise an :class:`ImageEncoder` whose ``resolution`` and ``in_channels`` default to the first
    stage's and must agree with them when set (the DPM head's ``hidden`` and ``feature_t``, which the
    small config carries, are ignored with a warning). ``num_units`` / ``unit_dim`` belong to ``model.params``.
    """
    if "target" in encoder_config:
        return instantiate_from_config(encoder_config)
    res, ch = first_stage_geometry(first_stage_config)
    backbone = encoder_config.get("backbone", "cnn")
    if backbone not in ENCODER_BACKBONES:
        raise ConfigError(f"encoder_config.backbone must be one of {ENCODER_BACKBONES}, got {backbone!r}")
    if backbone == "dpm":
        return _dpm_feature_encoder(encoder_config, res, ch, num_units, unit_dim, stochastic, frozen)
    # The DPM head's own keys, which a config merged over the small one carries, mean nothing to the CNN.
    # (standardize_code and whiten_features are keys of both encoders.)
    dpm_only = sorted(set(encoder_config) & set(DPM_ENCODER_KEYS) - CNN_ENCODER_KEYS - {"backbone"})
    if dpm_only:
        log.warning("encoder_config.backbone: cnn ignores the DPM-feature encoder's keys %s", dpm_only)
    encoder_config = {key: value for key, value in encoder_config.items() if key != "backbone" and key not in dpm_only}
    kwargs = dict(encoder_config)
    for key, value in (("num_units", num_units), ("unit_dim", unit_dim)):
        if key in kwargs and int(kwargs.pop(key)) != value:
            raise ConfigError(f"encoder_config.{key} differs from model.params.{key}; set it once, in model.params")
    if res is not None:
        given = kwargs.setdefault("resolution", res)
        if int(given) != res:
            raise ConfigError(f"encoder_config.resolution={given} but the first stage works on {res}x{res} images")
    if ch is not None:
        given = kwargs.setdefault("in_channels", ch)
        if int(given) != ch:
            raise ConfigError(f"encoder_config.in_channels={given} but the first stage's images have {ch} channels")
    if stochastic:
        kwargs["stochastic"] = True
    try:
        return ImageEncoder(num_units=num_units, unit_dim=unit_dim, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build the image encoder from encoder_config {encoder_config}: {exc}") from exc


def _dpm_feature_encoder(encoder_config: Mapping[str, Any], res: int | None, ch: int | None, num_units: int,
                         unit_dim: int, stochastic: bool,
                         frozen: tuple[nn.Module, nn.Module, float] | None) -> DPMFeatureEncoder:
    """``encoder_config.backbone: dpm``: the head on the frozen networks' features, checked."""
    unknown = set(encoder_config) - set(DPM_ENCODER_KEYS) - CNN_ENCODER_KEYS
    if unknown:
        raise ConfigError(f"encoder_config.backbone: dpm takes the keys {', '.join(DPM_ENCODER_KEYS[1:])}, "
                          f"got {sorted(unknown)}")
    if res is not None and int(encoder_config.get("resolution", res)) != res:
        raise ConfigError(f"encoder_config.resolution={encoder_config['resolution']} but the first stage works on "
                          f"{res}x{res} images")
    if ch is not None and int(encoder_config.get("in_channels", ch)) != ch:
        raise ConfigError(f"encoder_config.in_channels={encoder_config['in_channels']} but the first stage's images "
                          f"have {ch} channels")
    ignored = sorted(set(encoder_config) & CNN_ENCODER_KEYS - {"resolution", "in_channels", *DPM_ENCODER_KEYS})
    if ignored:  # a config merged over the published CNN's carries its keys
        log.warning("encoder_config.backbone: dpm ignores the CNN encoder's keys %s", ignored)
    if stochastic:
        raise ConfigError("code_kl_weight > 0 needs the CNN image encoder (encoder_config.backbone: cnn)")
    if frozen is None or res is None or ch is None:
        raise ConfigError("encoder_config.backbone: dpm needs the frozen first stage and UNet, and the first "
                          "stage's image size and channels in its config")
    first_stage, unet, scale_factor = frozen
    try:
        # Every key of this encoder goes to its constructor as given: the defaults, casts and checks live there.
        options = {key: encoder_config[key] for key in DPM_ENCODER_KEYS if key != "backbone" and key in encoder_config}
        return DPMFeatureEncoder(first_stage, unet, scale_factor, (ch, res, res), num_units, unit_dim, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build the image encoder from encoder_config {dict(encoder_config)}: {exc}") from exc


def check_stage3_options(deviations: Deviations, *, dis_loss_type: str, reencoder_bn_mode: str, loss_type: str,
                         dis_weight: float, num_units: int, unit_dim: int, custom_encoder: bool) -> None:
    """Raise :class:`ConfigError` naming the ``model.params`` key whose value stage 3 cannot use."""
    if dis_loss_type not in DIS_LOSS_TYPES:
        raise ConfigError(f"dis_loss_type must be one of {DIS_LOSS_TYPES}, got {dis_loss_type!r}")
    if reencoder_bn_mode not in REENCODER_BN_MODES:
        raise ConfigError(f"reencoder_bn_mode must be one of {REENCODER_BN_MODES}, got {reencoder_bn_mode!r}")
    if loss_type not in ("l1", "l2"):
        raise ConfigError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    if float(dis_weight) < 0:
        raise ConfigError(f"dis_weight must be >= 0, got {dis_weight}")
    if deviations.dis_weight_floor > 0 and dis_loss_type != "Z":
        raise ConfigError(f"dis_weight_floor needs dis_loss_type: Z, got {dis_loss_type!r}")
    if deviations.dis_weight_flat_in_t and dis_loss_type != "Z":
        raise ConfigError(f"dis_weight_flat_in_t needs dis_loss_type: Z, got {dis_loss_type!r}")
    if deviations.dis_reencode_latent and dis_loss_type != "Z":
        raise ConfigError(f"dis_reencode_latent needs dis_loss_type: Z (the IM weight compares decoded images), "
                          f"got {dis_loss_type!r}")
    if deviations.code_kl_weight > 0 and custom_encoder:
        raise ConfigError("code_kl_weight > 0 needs the built-in image encoder (encoder_config without 'target')")
    if int(num_units) < 1 or int(unit_dim) < 1:
        raise ConfigError(f"num_units and unit_dim must be positive, got {num_units}, {unit_dim}")
    for name in ("unit_decorrelation_weight", "unit_dependence_weight", "field_alignment_weight", "unit_tc_weight"):
        if getattr(deviations, name) > 0 and int(num_units) < 2:
            raise ConfigError(f"{name} > 0 needs num_units >= 2 (it scores pairs of units), got {num_units}")
