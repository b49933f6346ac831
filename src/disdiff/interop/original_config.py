"""The original DisDiff code's YAML configs as disdiff configs (spec sections 2–4 and 8).

:func:`convert_config` reads an original config — a stage-1 autoencoder
(``…autoencoder.VQModel`` / ``AutoencoderKL``), a stage-2 ``LatentDiffusion`` or a stage-3 DisDiff
``LatentDiffusion`` (shift UNet, ``Encoder4``) — and returns the disdiff config of the same
model: ``model`` from the original's hyper-parameters, ``data`` and ``lightning`` from the
published disdiff config of that stage, variant and dataset (batch size, workers and gradient
accumulation from the original).

Every key under the original's ``model`` block must be known: one it does not know, or a value
disdiff does not implement (e.g. ``parameterization: x0``), is reported, all in one
:class:`ConfigError` naming the file. Keys that have no effect on the model (``ckpt_path``,
``log_every_t``, …) are accepted and not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from disdiff.config import PACKAGED_CONFIG_DIR, ConfigError, plain
from disdiff.interop import original_blocks as blocks

__all__ = ["ConvertedConfig", "read_original_config", "original_stage", "convert_config", "ORIGINAL_DATASETS"]

#: Class names of the original's training datasets (``ldm.data.dis.*``) → disdiff dataset names.
ORIGINAL_DATASETS = {"Shapes3DTrain": "shapes3d", "MPI3DTrain": "mpi3d", "Cars3DTrain": "cars3d", "Celebarain": "celeba"}
PUBLISHED_DATASETS = ("shapes3d", "mpi3d", "cars3d", "celeba")
STAGES = ("autoencoder", "ldm", "disdiff")


@dataclass
class ConvertedConfig:
    """A converted config: ``stage`` (autoencoder | ldm | disdiff), ``variant`` (vq | kl), the disdiff
    ``config`` (model, data, lightning), the notes to show the user, and the original's gradient
    accumulation (stage 1 folds it into the learning rate, as the published disdiff configs do)."""

    stage: str
    variant: str
    config: DictConfig
    notes: list[str] = field(default_factory=list)
    accumulate_grad_batches: int = 1


def read_original_config(path: str | Path) -> dict:
    """The original YAML as plain containers (OmegaConf; interpolations resolved). Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"original config not found: {path}")
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # yaml / interpolation errors come in several types
        raise ConfigError(f"cannot read original config {path}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConfigError(f"original config {path} has no 'model' block (expected model.target and model.params)")
    return config


def original_stage(config: Mapping[str, Any]) -> tuple[str, str]:
    """``(stage, variant)`` of an original config: stage autoencoder | ldm | disdiff, variant vq | kl."""
    model = config["model"]
    name = blocks.class_name(model.get("target"))
    params = model.get("params") or {}
    if name in ("VQModel", "VQModelInterface"):
        return "autoencoder", "vq"
    if name == "AutoencoderKL":
        return "autoencoder", "kl"
    if name == "LatentDiffusion":
        first = blocks.class_name((params.get("first_stage_config") or {}).get("target"))
        variant = "kl" if first == "AutoencoderKL" else "vq"
        unet_target = str((params.get("unet_config") or {}).get("target", ""))
        cond = params.get("cond_stage_config")
        cond_name = blocks.class_name(cond.get("target")) if isinstance(cond, Mapping) else ""
        shift = "openaimodel_shift" in unet_target or cond_name == "Encoder4" or bool(params.get("dis_loss_flag", False))
        return ("disdiff" if shift else "ldm"), variant
    raise ConfigError(f"model.target {model.get('target')!r} is not an original DisDiff model (expected "
                      "ldm.models.autoencoder.VQModel/AutoencoderKL or ldm.models.diffusion.ddpm.LatentDiffusion)")


# ---------------------------------------------------------------------------------------------
# whole configs
# ---------------------------------------------------------------------------------------------
def _template(stage: str, variant: str, dataset: str) -> DictConfig:
    name = dataset if dataset in PUBLISHED_DATASETS else "shapes3d"
    path = PACKAGED_CONFIG_DIR / {"autoencoder": f"autoencoder/{name}-{variant}-f4.yaml", "ldm": f"ldm/{name}-{variant}.yaml",
                                  "disdiff": f"disdiff/{name}-{variant}-dis.yaml"}[stage]
    return OmegaConf.load(path)


def _dataset_of(config: Mapping[str, Any]) -> str | None:
    train = (((config.get("data") or {}).get("params") or {}).get("train") or {})
    return ORIGINAL_DATASETS.get(blocks.class_name(train.get("target") if isinstance(train, Mapping) else None))


def _data_block(template: DictConfig, config: Mapping[str, Any], dataset: str, dataset_options: Mapping[str, Any] | None,
                data_dir: str | None) -> dict:
    data = plain(template.data)
    params = data["params"]
    original = (config.get("data") or {}).get("params") or {}
    params["dataset"] = dataset
    if dataset_options:
        params["dataset_options"] = dict(dataset_options)
    if data_dir is not None:
        params["data_dir"] = str(data_dir)
    if original.get("batch_size") is not None:
        params["batch_size"] = int(original["batch_size"])
    if original.get("num_workers") is not None:
        params["num_workers"] = int(original["num_workers"])
    return data


def _base_lr(config: Mapping[str, Any], template: DictConfig) -> float:
    value = config["model"].get("base_learning_rate", template.model.get("base_learning_rate"))
    return float(value)


def convert_config(
    config: Mapping[str, Any],
    source: str,
    *,
    dataset: str | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    dis_weight: float | None = None,
    dis_loss_type: str | None = None,
) -> ConvertedConfig:
    """The disdiff config of an original config (see the module docstring).

    ``dataset``/``dataset_options``/``data_dir`` replace the dataset the original trained on (its
    ``data.params.train.target``); ``dis_weight``/``dis_loss_type`` are the original's ``-dw``/``-dt``
    command-line values, which replaced the YAML's (spec 8). For stage 3 the result's
    ``model.params.stage2`` lacks ``scale_factor`` and ``source``, which come from the checkpoint.
    """
    problems = blocks.Problems(source)
    notes: list[str] = []
    stage, variant = original_stage(config)
    inferred = _dataset_of(config)
    dataset_name = dataset or inferred
    if dataset_name is None:
        train = (((config.get("data") or {}).get("params") or {}).get("train") or {})
        raise ConfigError(f"original config {source}: cannot tell the dataset from data.params.train.target "
                          f"{train.get('target') if isinstance(train, Mapping) else None!r} (known: {sorted(ORIGINAL_DATASETS)}); "
                          "pass --dataset NAME")
    template = _template(stage, variant, dataset_name)
    model = plain(template.model)
    model_block = blocks.Block(config["model"], "model", problems)
    model_block.ignore("target", "base_learning_rate")
    p = blocks.Block(model_block.get("params"), "model.params", problems)
    model_block.finish()
    trainer = ((config.get("lightning") or {}).get("trainer") or {})
    accumulate = int(trainer.get("accumulate_grad_batches", 1) or 1)
    base_lr = _base_lr(config, template)
    params = model["params"]

    if stage == "autoencoder":
        first, _, fs_block = blocks.first_stage({"target": config["model"].get("target"), "params": config["model"].get("params")},
                                          "model", problems, stage1=True)
        p.seen.update(fs_block.seen)
        params["autoencoder_config"] = first
        params["loss_config"] = blocks.stage1_loss(p.need("lossconfig"), "model.params.lossconfig", problems)
        params["image_key"] = str(p.get("image_key", "image"))
        params["monitor"] = p.get("monitor")
        params["lpips_weights"] = None
        params["vgg_weights"] = None
        # Lightning does not accumulate for manually optimised modules: the same absolute lr with
        # accumulation folded into the base (as the published disdiff stage-1 configs).
        model["base_learning_rate"] = base_lr * accumulate
        if accumulate != 1:
            notes.append(f"stage 1: accumulate_grad_batches {accumulate} folded into base_learning_rate "
                         f"{base_lr:g} x {accumulate} = {base_lr * accumulate:g}")
        notes.append("stage 1: the perceptual (LPIPS) term needs local weight files; set model.params.lpips_weights and "
                     "vgg_weights in configs/config.yaml before resuming training")
    else:
        model["base_learning_rate"] = base_lr
        first, _, first_params = blocks.first_stage(p.need("first_stage_config"), "model.params.first_stage_config", problems,
                                              stage1=False)
        first_params.finish()
        shift = stage == "disdiff"
        unet, shift_settings = blocks.unet(p.need("unet_config"), "model.params.unet_config", problems, shift=shift)
        diffusion = blocks.diffusion_params(p, problems, notes)
        if stage == "ldm":
            cond = p.get("cond_stage_config", "__is_unconditional__")
            if cond != "__is_unconditional__":
                problems.unsupported.append("model.params.cond_stage_config of a stage-2 model must be __is_unconditional__")
            p.expect("conditioning_key", None)
            p.ignore("cond_stage_trainable")
            params.update({k: diffusion[k] for k in ("timesteps", "beta_schedule", "linear_start", "linear_end",
                                                      "loss_type", "use_ema", "image_key", "monitor", "warmup_steps")})
            params.update({"unet_config": unet, "first_stage_config": first, "first_stage_ckpt": None, "scale_by_std": True})
        else:
            _disdiff_params(params, p, problems, notes, diffusion, unet, first, shift_settings, dis_weight, dis_loss_type)
        _check_latents(first, unet, problems)
    p.finish()
    problems.raise_if_any()

    lightning = plain(template.lightning)
    if stage != "autoencoder" and accumulate != 1:
        lightning.setdefault("trainer", {})["accumulate_grad_batches"] = accumulate
    data = _data_block(template, config, dataset_name, dataset_options, data_dir)
    result = OmegaConf.create({"model": model, "data": data, "lightning": lightning})
    return ConvertedConfig(stage, variant, result, notes, accumulate)


def _check_latents(first: Mapping[str, Any], unet: Mapping[str, Any], problems: blocks.Problems) -> None:
    embed = (first.get("params") or {}).get("embed_dim")
    u = unet["params"]
    if embed is not None and (u.get("in_channels") != embed or u.get("out_channels") != embed):
        problems.unsupported.append(f"unet_config in/out_channels {u.get('in_channels')}/{u.get('out_channels')} differ "
                                    f"from the first stage's embed_dim {embed}")


def _disdiff_params(params: dict, p: blocks.Block, problems: blocks.Problems, notes: list[str], diffusion: dict, unet: dict,
                    first: dict, shift: dict, dis_weight: float | None, dis_loss_type: str | None) -> None:
    """Fill disdiff ``DisDiffModule`` params from an original stage-3 ``LatentDiffusion`` block."""
    p.expect("conditioning_key", "adm")
    p.expect("detach_flag", False)
    p.expect("train_enc_flag", False)
    p.expect("cond_stage_trainable", True)
    p.ignore("plot_swapped_concepts", "plot_decoded_xstart")
    dis_flag = bool(p.get("dis_loss_flag", False))
    yaml_type, yaml_weight = p.get("dis_loss_type"), p.get("dis_weight")
    loss_type = dis_loss_type or yaml_type or "IM"
    if loss_type not in ("Z", "IM"):
        problems.unsupported.append(f"dis_loss_type = {loss_type!r} (disdiff implements Z and IM)")
    if dis_weight is not None:
        weight = float(dis_weight)
    else:
        weight = float(yaml_weight) if yaml_weight is not None else 1.0
        notes.append(f"dis_weight {weight:g} taken from the {'YAML' if yaml_weight is not None else 'default of main.py -dw'}; "
                     "the original's main.py replaced it with its -dw value (default 1.0): pass --dis-weight if your "
                     "run used another one (it matters only for resuming training)")
    if not dis_flag:
        weight = 0.0
        notes.append("dis_loss_flag is false in the original config: dis_weight 0 (reconstruction loss only)")

    cond = blocks.Block(p.need("cond_stage_config"), "model.params.cond_stage_config", problems)
    if blocks.class_name(cond.get("target")) != "Encoder4":
        problems.unsupported.append(f"model.params.cond_stage_config.target {cond.values.get('target')!r} (expected Encoder4)")
    enc = blocks.Block(cond.get("params"), "model.params.cond_stage_config.params", problems)
    cond.finish()
    width, latent_dim = enc.need("d"), enc.need("latent_dim")
    enc.finish()
    units, unit_dim = shift.get("latent_unit"), shift.get("repre_emb_channels")
    if None not in (latent_dim, units, unit_dim) and int(latent_dim) != int(units) * int(unit_dim):
        problems.unsupported.append(f"Encoder4 latent_dim {latent_dim} != latent_unit {units} x repre_emb_channels {unit_dim}")
    dd = (first.get("params") or {}).get("ddconfig") or {}

    use_ema_unet = not shift.get("load_ema_ckpt", False)  # the original's flag is inverted (spec 4.7)
    notes.append(f"the frozen UNet in the checkpoint holds the stage-2 {'EMA' if use_ema_unet else 'raw'} weights "
                 f"(load_ema_ckpt: {str(shift.get('load_ema_ckpt', False)).lower()} in the original loads the "
                 f"{'EMA' if use_ema_unet else 'raw'} ones): use_ema_unet {str(use_ema_unet).lower()}")
    params.update({
        "ldm_ckpt": None,
        "use_ema_unet": use_ema_unet,
        "num_units": int(units) if units is not None else 6,
        "unit_dim": int(unit_dim) if unit_dim is not None else 32,
        "encoder_config": {"width": int(width) if width is not None else 128, "resolution": dd.get("resolution"),
                           "in_channels": dd.get("in_channels")},
        "dis_loss_type": loss_type,
        "dis_weight": weight,
        "reencoder_bn_mode": "eval",
        "loss_type": diffusion["loss_type"],
        "warmup_steps": diffusion["warmup_steps"],
        "use_ema": diffusion["use_ema"],
        "image_key": diffusion["image_key"],
        "monitor": diffusion["monitor"],
        "orthogonal_part_embedding": True,
        "released_part_convention": True,  # the original computes exp(W^T - W) (spec 4.4, 10)
        "autocast_bf16_dis_path": False,
        "stage2": {
            "use_ema": use_ema_unet,
            "global_step": 0,
            "unet_config": unet,
            "first_stage_config": first,
            "schedule_config": {k: diffusion[k] for k in ("timesteps", "beta_schedule", "linear_start", "linear_end")},
            "original_ldm_ckpt": shift.get("ckpt_path"),
        },
    })

