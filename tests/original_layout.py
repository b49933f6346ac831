"""Checkpoints and configs in the original DisDiff code's layout, made from disdiff's own small modules.

The renaming follows the spec's description of the original's files (section 10; configs from
sections 2–4). It is written here independently of ``disdiff.interop.original`` (regular
expressions instead of that module's functions) so that the import tests compare two separate
readings of the layout rather than one mapping with its own inverse.

The models use GroupNorm with 32 groups (hard-coded in the original), so the smallest channel
count is 32; images are 16×16 and latents 8×8.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import torch

IMAGE_SIZE = 16
LEVELS = 2  # len(ch_mult) of the first stage: decoder levels 0 and 1 swap places in the original
DDCONFIG = dict(double_z=False, z_channels=3, resolution=IMAGE_SIZE, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                num_res_blocks=1, attn_resolutions=[], dropout=0.0)
KL_DDCONFIG = dict(DDCONFIG, double_z=True, z_channels=4)
UNET_PARAMS = dict(image_size=IMAGE_SIZE // 2, in_channels=3, out_channels=3, model_channels=32, attention_resolutions=[2],
                   num_res_blocks=1, channel_mult=[1, 2], num_heads=2, use_scale_shift_norm=True, resblock_updown=True)
NUM_UNITS, UNIT_DIM, ENCODER_WIDTH = 3, 4, 8

# disdiff configs of the same models
DISDIFF_VQ = {"target": "disdiff.models.autoencoder.VQModel",
              "params": {"embed_dim": 3, "n_embed": 16, "ddconfig": dict(DDCONFIG, num_groups=32)}}
DISDIFF_KL = {"target": "disdiff.models.autoencoder.AutoencoderKL",
              "params": {"embed_dim": 4, "ddconfig": dict(KL_DDCONFIG, num_groups=32)}}


def disdiff_unet(channels: int = 3) -> dict:
    return {"target": "disdiff.models.unet.UNetModel",
            "params": dict(UNET_PARAMS, in_channels=channels, out_channels=channels, num_groups=32)}

SCHEDULER = {"target": "ldm.lr_scheduler.LambdaLinearScheduler",
             "params": {"warm_up_steps": [10000], "cycle_lengths": [10000000000000], "f_start": [1.0e-6], "f_max": [1.0],
                        "f_min": [1.0]}}
DATA = {"target": "main.DataModuleFromConfig",
        "params": {"batch_size": 4, "num_workers": 0, "wrap": True,
                   "train": {"target": "ldm.data.dis.Shapes3DTrain", "params": {}},
                   "test": {"target": "ldm.data.dis.Shapes3DTrain", "params": {}}}}
LIGHTNING = {"trainer": {"benchmark": True}}


# ---------------------------------------------------------------------------------------------
# original configs (spec 2.2-2.4, 3.2, 4.1)
# ---------------------------------------------------------------------------------------------
def original_first_stage_block(kind: str = "vq", interface: bool = True) -> dict:
    if kind == "vq":
        return {"target": "ldm.models.autoencoder.VQModelInterface" if interface else "ldm.models.autoencoder.VQModel",
                "params": {"embed_dim": 3, "n_embed": 16, "ckpt_path": "/my/checkpoint/path", "ddconfig": dict(DDCONFIG),
                           "lossconfig": {"target": "torch.nn.Identity"}}}
    return {"target": "ldm.models.autoencoder.AutoencoderKL",
            "params": {"embed_dim": 4, "ckpt_path": "/my/checkpoint/path", "ddconfig": dict(KL_DDCONFIG),
                       "lossconfig": {"target": "torch.nn.Identity"}}}


def original_stage1_config(kind: str = "vq") -> dict:
    block = original_first_stage_block(kind, interface=False)
    params = block["params"]
    params.pop("ckpt_path")
    params["monitor"] = "val/rec_loss"
    if kind == "vq":
        params["lossconfig"] = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                                "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0,
                                           "disc_weight": 0.75, "codebook_weight": 1.0}}
    else:
        params["lossconfig"] = {"target": "ldm.modules.losses.LPIPSWithDiscriminator",
                                "params": {"disc_start": 50001, "kl_weight": 1.0e-6, "disc_weight": 0.5}}
    return {"model": {"base_learning_rate": 4.5e-6, **block}, "data": DATA,
            "lightning": {"trainer": {"benchmark": True, "accumulate_grad_batches": 2}}}


def _diffusion_params() -> dict:
    return {"linear_start": 0.0015, "linear_end": 0.0155, "num_timesteps_cond": 1, "log_every_t": 200, "timesteps": 1000,
            "first_stage_key": "image", "cond_stage_key": "image", "image_size": IMAGE_SIZE // 2, "channels": 3,
            "concat_mode": False, "scale_by_std": True, "loss_type": "l1", "scheduler_config": copy.deepcopy(SCHEDULER)}


def original_stage2_config(kind: str = "vq") -> dict:
    channels = 3 if kind == "vq" else 4
    params = {**_diffusion_params(), "cond_stage_trainable": False, "monitor": "val/loss_simple_ema",
              "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                              "params": dict(UNET_PARAMS, in_channels=channels, out_channels=channels)},
              "first_stage_config": original_first_stage_block(kind), "cond_stage_config": "__is_unconditional__"}
    return {"model": {"base_learning_rate": 2.0e-6, "target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params},
            "data": DATA, "lightning": LIGHTNING}


def original_stage3_config(load_ema_ckpt: bool = True) -> dict:
    unet = dict(UNET_PARAMS, repre_emb_channels=UNIT_DIM, latent_unit=NUM_UNITS, seprate_decoder=True, orth_emb=True,
                ckpt_path="/my/ldm/last.ckpt", load_ema_ckpt=load_ema_ckpt)
    params = {**_diffusion_params(), "cond_stage_trainable": True, "conditioning_key": "adm", "monitor": "train/epoch_num",
              "dis_loss_flag": True, "dis_loss_type": "Z", "dis_weight": 0.05,
              "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel_shift.UNetModel", "params": unet},
              "first_stage_config": original_first_stage_block("vq"),
              "cond_stage_config": {"target": "ldm.modules.encoders.modules.Encoder4",
                                    "params": {"d": ENCODER_WIDTH, "latent_dim": NUM_UNITS * UNIT_DIM}}}
    return {"model": {"base_learning_rate": 2.0e-6, "target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params},
            "data": DATA, "lightning": LIGHTNING}


# ---------------------------------------------------------------------------------------------
# renaming (spec 10)
# ---------------------------------------------------------------------------------------------
def original_first_stage_name(name: str) -> str:
    """disdiff first-stage key -> original: ``downsample``/``upsample``, decoder levels in reverse order."""
    name = re.sub(r"^encoder\.down\.(\d+)\.resample\.", r"encoder.down.\1.downsample.", name)
    m = re.match(r"^decoder\.up\.(\d+)\.(resample\.)?(.*)$", name)
    if m:
        level = LEVELS - 1 - int(m.group(1))
        name = f"decoder.up.{level}.{'upsample.' if m.group(2) else ''}{m.group(3)}"
    return name


def original_ema_name(param: str) -> str:
    """``model_ema.`` + ``diffusion_model.<param>`` with the dots removed."""
    return "model_ema." + re.sub(r"\.", "", "diffusion_model." + param)


def original_encoder_name(name: str) -> str:
    """disdiff ``features.<i>.…`` / ``fc.…`` -> ``cond_stage_model.encoder.<i>.…`` (ResBlock: convs.1/2/4; Linear: 16)."""
    m = re.match(r"^features\.(\d+)\.(conv3|bn|conv1)\.(.*)$", name)
    if m:
        return f"cond_stage_model.encoder.{m.group(1)}.convs.{ {'conv3': 1, 'bn': 2, 'conv1': 4}[m.group(2)] }.{m.group(3)}"
    m = re.match(r"^features\.(\d+)\.(.*)$", name)
    if m:
        return f"cond_stage_model.encoder.{m.group(1)}.{m.group(2)}"
    return "cond_stage_model.encoder.16." + name[len("fc."):]


def _schedule_entries(schedule: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in schedule.state_dict().items()}
    out["logvar"] = torch.zeros(1000)
    return out


def _lightning_1x(state: dict, global_step: int, epoch: int, lr: float | None) -> dict:
    ckpt = {"state_dict": state, "global_step": global_step, "epoch": epoch, "pytorch-lightning_version": "1.4.2"}
    if lr is not None:
        ckpt["optimizer_states"] = [{"state": {}, "param_groups": [{"lr": lr, "initial_lr": lr, "betas": (0.9, 0.999),
                                                                    "eps": 1e-8, "weight_decay": 0.01, "params": [0]}]}]
        ckpt["lr_schedulers"] = [{"base_lrs": [lr], "last_epoch": global_step, "_step_count": global_step + 1,
                                  "lr_lambdas": [{"warm_up_steps": [10000], "f_start": [1e-6]}]}]
    return ckpt


def stage1_state(autoencoder: torch.nn.Module, loss_state: dict | None = None) -> dict:
    state = {original_first_stage_name(k): v.clone() for k, v in autoencoder.state_dict().items()}
    for k, v in (loss_state or {}).items():
        state["loss." + k] = v.clone()
    return state


def stage2_state(ldm) -> dict:
    state = {"model.diffusion_model." + k: v.clone() for k, v in ldm.unet.state_dict().items()}
    for name, shadow in ldm.ema.param_to_shadow.items():
        state[original_ema_name(name)] = getattr(ldm.ema, shadow).clone()
    state["model_ema.decay"] = ldm.ema.decay.clone()
    state["model_ema.num_updates"] = ldm.ema.num_updates.to(torch.int32)
    state.update({"first_stage_model." + original_first_stage_name(k): v.clone()
                  for k, v in ldm.first_stage.state_dict().items()})
    state["scale_factor"] = ldm.scale_factor.clone()
    state.update(_schedule_entries(ldm.schedule))
    return state


def stage3_state(module) -> dict:
    """The original stage-3 layout of a disdiff ``DisDiffModule`` built with the default part convention.

    The original computes exp(Wᵀ − W) from its ``part_latents.weight``; disdiff's default is
    exp(W − Wᵀ), so the stored matrix (and its EMA shadow) is disdiff's W transposed.
    """
    den = module.denoiser
    state = {"model.diffusion_model." + k: v.clone() for k, v in den.unet.state_dict().items()}
    for name in ("shift_middle_block", "shift_output_blocks", "shift_out", "repre_embed", "part_emb"):
        for k, v in getattr(den, name).state_dict().items():
            state[f"model.diffusion_model.{name}.{k}"] = v.clone()
    state["model.diffusion_model.part_latents.weight"] = den.part_latents.weight.detach().t().clone()
    state["model.diffusion_model.scale_factor"] = module.scale_factor.clone()
    for name, shadow in module.ema.param_to_shadow.items():
        value = getattr(module.ema, shadow).clone()
        state[original_ema_name(name)] = value.t().clone() if name == "part_latents.weight" else value
    state["model_ema.decay"] = module.ema.decay.clone()
    state["model_ema.num_updates"] = module.ema.num_updates.to(torch.int32)
    state.update({original_encoder_name(k): v.clone() for k, v in module.encoder.state_dict().items()})
    state.update({"first_stage_model." + original_first_stage_name(k): v.clone()
                  for k, v in module.first_stage.state_dict().items()})
    state["scale_factor"] = module.scale_factor.clone()
    state.update(_schedule_entries(module.schedule))
    return state


def save_original(path: Path, state: dict, global_step: int, epoch: int = 0, lr: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_lightning_1x(state, global_step, epoch, lr), path)
    return path


# ---------------------------------------------------------------------------------------------
# reference disdiff modules (random weights with non-zero outputs)
# ---------------------------------------------------------------------------------------------
def _fill_zero_layers(parameters, seed: int, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parameters:
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _perturb_ema(ema, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for shadow in ema.param_to_shadow.values():
            buf = getattr(ema, shadow)
            buf.add_(0.01 * torch.randn(buf.shape, generator=g))
        ema.num_updates.fill_(57)


def reference_ldm(kind: str = "vq", seed: int = 0, scale_factor: float = 0.8):
    """A disdiff stage-2 module in the 32-group geometry: random UNet with non-zero output, EMA != live weights."""
    from disdiff.training.ldm_module import LatentDiffusionModule

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ldm = LatentDiffusionModule(unet_config=disdiff_unet(3 if kind == "vq" else 4),
                                    first_stage_config=DISDIFF_VQ if kind == "vq" else DISDIFF_KL,
                                    first_stage_ckpt=None, warmup_steps=10000)
    _fill_zero_layers(ldm.unet.parameters(), seed + 1)
    ldm.ema = type(ldm.ema)(ldm.unet, decay=0.9999)
    _perturb_ema(ldm.ema, seed + 2)
    ldm.scale_factor.fill_(scale_factor)
    return ldm


def reference_disdiff(ldm_ckpt: Path, seed: int = 0):
    """A disdiff stage-3 module (default part convention): non-zero G, EMA != live, BN statistics != defaults."""
    from disdiff.training.disdiff_module import DisDiffModule

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = DisDiffModule(ldm_ckpt=str(ldm_ckpt), encoder_config={"width": ENCODER_WIDTH}, num_units=NUM_UNITS,
                               unit_dim=UNIT_DIM, use_ema_unet=False, dis_weight=0.05, warmup_steps=10000)
    _fill_zero_layers(module.denoiser.trainable_parameters(), seed + 1)
    _perturb_ema(module.ema, seed + 2)
    module.train()
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for _ in range(3):  # move the BatchNorm running statistics away from (0, 1)
            module.encoder(torch.rand(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 2 - 1)
    return module


def save_disdiff_ldm(ldm, path: Path) -> Path:
    """The reference stage-2 module as a disdiff checkpoint (what a stage-3 reference is built on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": ldm.state_dict(), "hyper_parameters": dict(ldm.hparams), "global_step": 3}, path)
    return path
