"""Reading the model blocks of an original DisDiff config, key by key.

:class:`Block` reads one block's ``params`` and :class:`Problems` collects every unknown key and
unsupported value, so that :func:`disdiff.interop.original_config.convert_config` reports them all
in one error. The functions below translate the first stage (``ddconfig``), its loss, the UNet
(plain or shift), the learning-rate warm-up and the diffusion parameters into disdiff's keys.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from disdiff.config import ConfigError, plain


class Problems:
    """Collects every unknown key and unsupported value, to report them in one error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.unknown: list[str] = []
        self.unsupported: list[str] = []

    def raise_if_any(self) -> None:
        if not (self.unknown or self.unsupported):
            return
        lines = [f"original config {self.source} cannot be imported:"]
        if self.unknown:
            lines.append(f"  keys the importer does not know ({len(self.unknown)}): {', '.join(self.unknown)}")
        if self.unsupported:
            lines.append(f"  settings disdiff does not implement ({len(self.unsupported)}): " + "; ".join(self.unsupported))
        lines.append("nothing was written")
        raise ConfigError("\n".join(lines))


class Block:
    """The ``params`` of one original config block, read key by key (see :meth:`finish`)."""

    def __init__(self, values: Any, where: str, problems: Problems) -> None:
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            problems.unsupported.append(f"{where} must be a mapping, got {values!r}")
            values = {}
        self.values = dict(values)
        self.where = where
        self.problems = problems
        self.seen: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self.values.get(key, default)

    def need(self, key: str) -> Any:
        """A value the importer cannot default (an architecture setting): reported if absent."""
        self.seen.add(key)
        if key not in self.values:
            self.problems.unsupported.append(f"{self.where}.{key} is missing (the importer does not assume its default)")
        return self.values.get(key)

    def expect(self, key: str, *allowed: Any) -> Any:
        """A key whose only supported values are ``allowed`` (the first is the original's default)."""
        self.seen.add(key)
        value = self.values.get(key, allowed[0])
        if not any(same(value, a) for a in allowed):
            shown = " or ".join(repr(a) for a in allowed)
            self.problems.unsupported.append(f"{self.where}.{key} = {value!r} (disdiff implements {shown})")
        return value

    def ignore(self, *keys: str) -> None:
        self.seen.update(keys)

    def finish(self) -> None:
        """Report every key that was not read."""
        self.problems.unknown += [f"{self.where}.{k}" for k in self.values if k not in self.seen]


def same(value: Any, allowed: Any) -> bool:
    if isinstance(allowed, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(float(value), allowed, rel_tol=1e-9, abs_tol=1e-12)
    return value == allowed and type(value) is type(allowed) or (value is None and allowed is None)


def class_name(target: Any) -> str:
    return str(target or "").rsplit(".", 1)[-1]


DDCONFIG_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
                 "attn_resolutions")


def ddconfig(values: Any, where: str, problems: Problems) -> dict:
    block = Block(values, where, problems)
    dd = {key: plain(block.need(key)) for key in DDCONFIG_KEYS}
    dd["dropout"] = float(block.get("dropout", 0.0))
    dd["num_groups"] = 32  # hard-coded in the original (spec 2.1)
    # Options of the original's Encoder/Decoder that the published configs leave at these values.
    block.expect("resamp_with_conv", True)
    block.expect("give_pre_end", False)
    block.expect("tanh_out", False)
    block.expect("use_linear_attn", False)
    block.expect("attn_type", "vanilla")
    block.finish()
    return dd


def first_stage(block_values: Any, where: str, problems: Problems, stage1: bool) -> tuple[dict, str, Block]:
    """disdiff ``target``/``params`` of an original first-stage block, its variant, and the block (for stage 1)."""
    outer = Block(block_values, where, problems)
    name = class_name(outer.get("target"))
    p = Block(outer.get("params"), f"{where}.params", problems)
    outer.finish()
    dd = ddconfig(p.need("ddconfig"), f"{where}.params.ddconfig", problems)
    p.ignore("ckpt_path", "ignore_keys", "monitor", "image_key", "colorize_nlabels")
    if not stage1:
        loss = p.get("lossconfig")
        if loss is not None and class_name((loss or {}).get("target")) != "Identity":
            problems.unsupported.append(f"{where}.params.lossconfig of a frozen first stage must be torch.nn.Identity")
    if name in ("VQModel", "VQModelInterface"):
        params = {"embed_dim": p.need("embed_dim"), "n_embed": p.need("n_embed"), "beta": 0.25, "legacy": True,
                  "ddconfig": dd}
        p.expect("remap", None)
        p.expect("use_ema", False)
        p.expect("lr_g_factor", 1.0)
        p.expect("scheduler_config", None)
        p.expect("batch_resize_range", None)
        p.ignore("sane_index_shape", "n_labels")
        if dd.get("double_z"):
            problems.unsupported.append(f"{where}.params.ddconfig.double_z = true for a VQ model")
        return {"target": "disdiff.models.autoencoder.VQModel", "params": params}, "vq", p
    if name == "AutoencoderKL":
        return ({"target": "disdiff.models.autoencoder.AutoencoderKL", "params": {"embed_dim": p.need("embed_dim"), "ddconfig": dd}},
                "kl", p)
    problems.unsupported.append(f"{where}.target {outer.values.get('target')!r} (expected VQModel, VQModelInterface "
                                "or AutoencoderKL)")
    return {"target": "disdiff.models.autoencoder.VQModel", "params": {"ddconfig": dd}}, "vq", p


LOSS_TARGETS = {
    "VQLPIPSWithDiscriminator": "disdiff.models.autoencoder.losses.VQLPIPSWithDiscriminator",
    "LPIPSWithDiscriminator": "disdiff.models.autoencoder.losses.LPIPSWithDiscriminator",
}


def stage1_loss(values: Any, where: str, problems: Problems) -> dict:
    import inspect

    from disdiff.config import get_obj_from_str

    outer = Block(values, where, problems)
    name = class_name(outer.get("target"))
    p = Block(outer.get("params"), f"{where}.params", problems)
    outer.finish()
    if name not in LOSS_TARGETS:
        problems.unsupported.append(f"{where}.target {outer.values.get('target')!r} (expected one of {sorted(LOSS_TARGETS)})")
        p.finish()
        return {"target": LOSS_TARGETS["VQLPIPSWithDiscriminator"], "params": {"disc_start": 0}}
    target = LOSS_TARGETS[name]
    accepted = set(inspect.signature(get_obj_from_str(target)).parameters) - {"lpips_weights", "vgg_weights"}
    params = {k: plain(p.get(k)) for k in list(p.values) if k in accepted}
    p.expect("use_actnorm", False)
    p.finish()
    return {"target": target, "params": params}


UNET_REQUIRED = ("image_size", "in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions",
                 "channel_mult", "num_heads", "use_scale_shift_norm", "resblock_updown")


def unet(values: Any, where: str, problems: Problems, shift: bool) -> tuple[dict, dict]:
    """disdiff ``UNetModel`` block of an original (shift) UNet config, and the shift UNet's own settings."""
    outer = Block(values, where, problems)
    outer.get("target")
    p = Block(outer.get("params"), f"{where}.params", problems)
    outer.finish()
    params = {key: plain(p.need(key)) for key in UNET_REQUIRED}
    params["dropout"] = float(p.get("dropout", 0.0))
    params["num_head_channels"] = int(p.get("num_head_channels", -1))
    params["conv_resample"] = bool(p.get("conv_resample", True))
    params["num_groups"] = 32  # hard-coded in the original (spec 3.1)
    upsample_heads = p.get("num_heads_upsample", -1)
    if upsample_heads not in (-1, params["num_heads"]):
        problems.unsupported.append(f"{where}.params.num_heads_upsample = {upsample_heads} (disdiff uses num_heads "
                                    "in the decoder half too)")
    p.expect("dims", 2)
    p.expect("num_classes", None)
    p.expect("use_fp16", False)
    p.expect("use_new_attention_order", False)
    p.expect("use_spatial_transformer", False)
    p.expect("context_dim", None)
    p.expect("n_embed", None)
    p.ignore("use_checkpoint", "legacy", "transformer_depth")
    extra: dict = {}
    if shift:
        extra["latent_unit"] = p.need("latent_unit")
        extra["repre_emb_channels"] = p.need("repre_emb_channels")
        extra["load_ema_ckpt"] = bool(p.get("load_ema_ckpt", False))
        extra["ckpt_path"] = p.get("ckpt_path")
        p.expect("seprate_decoder", True)
        p.expect("orth_emb", True)
        p.expect("wo_part_emb", False)
        p.ignore("ignore_keys")
    p.finish()
    return {"target": "disdiff.models.unet.UNetModel", "params": params}, extra


def warmup_steps(values: Any, where: str, problems: Problems) -> int:
    """The warm-up of the original's ``LambdaLinearScheduler`` (one cycle, linear warm-up from 1e-6, then 1)."""
    if values is None:
        problems.unsupported.append(f"{where} is missing (disdiff always warms up linearly; the published configs "
                                    "use LambdaLinearScheduler with warm_up_steps [10000])")
        return 10000
    outer = Block(values, where, problems)
    if class_name(outer.get("target")) != "LambdaLinearScheduler":
        problems.unsupported.append(f"{where}.target {outer.values.get('target')!r} (disdiff implements LambdaLinearScheduler)")
    p = Block(outer.get("params"), f"{where}.params", problems)
    outer.finish()

    def single(key: str, default: Any) -> Any:
        value = plain(p.get(key, [default]))
        if not isinstance(value, list) or len(value) != 1:
            problems.unsupported.append(f"{where}.params.{key} = {value!r} (disdiff implements one cycle)")
            return default
        return value[0]

    warm = single("warm_up_steps", 10000)
    f_start, f_max, f_min = single("f_start", 1e-6), single("f_max", 1.0), single("f_min", 1.0)
    cycle = single("cycle_lengths", 1e13)
    if not math.isclose(float(f_start), 1e-6, rel_tol=1e-6) or float(f_max) != 1.0 or float(f_min) != 1.0:
        problems.unsupported.append(f"{where}: f_start {f_start}, f_max {f_max}, f_min {f_min} (disdiff implements "
                                    "a warm-up from 1e-6 to a constant 1)")
    if float(cycle) < 1e9:
        problems.unsupported.append(f"{where}.params.cycle_lengths = [{cycle}] (disdiff implements one endless cycle)")
    p.ignore("verbosity_interval")
    p.finish()
    return int(warm)


def diffusion_params(p: Block, problems: Problems, notes: list[str]) -> dict:
    """The settings shared by the original's stage-2 and stage-3 ``LatentDiffusion``."""
    out = {
        "timesteps": int(p.get("timesteps", 1000)),
        "beta_schedule": str(p.get("beta_schedule", "linear")),
        "linear_start": float(p.get("linear_start", 1e-4)),
        "linear_end": float(p.get("linear_end", 2e-2)),
        "loss_type": str(p.get("loss_type", "l2")),
        "use_ema": bool(p.get("use_ema", True)),
        "image_key": str(p.get("first_stage_key", "image")),
        "monitor": p.get("monitor"),
        "warmup_steps": warmup_steps(p.get("scheduler_config"), f"{p.where}.scheduler_config", problems),
    }
    if out["beta_schedule"] not in ("linear", "sqrt_linear", "sqrt", "cosine"):
        problems.unsupported.append(f"{p.where}.beta_schedule = {out['beta_schedule']!r}")
    if out["loss_type"] not in ("l1", "l2"):
        problems.unsupported.append(f"{p.where}.loss_type = {out['loss_type']!r} (disdiff implements l1 and l2)")
    p.expect("cosine_s", 8e-3)
    p.expect("parameterization", "eps")
    p.expect("given_betas", None)
    p.expect("v_posterior", 0.0)
    p.expect("original_elbo_weight", 0.0)
    p.expect("l_simple_weight", 1.0)
    p.expect("learn_logvar", False)
    p.expect("logvar_init", 0.0)
    p.expect("use_positional_encodings", False)
    p.expect("cond_stage_forward", None)
    p.ignore("scale_by_std", "scale_factor", "ckpt_path", "ignore_keys", "load_only_unet", "log_every_t",
             "num_timesteps_cond", "image_size", "channels", "clip_denoised", "concat_mode", "cond_stage_key")
    if not p.get("scale_by_std", False):
        notes.append("the original config has scale_by_std false: the checkpoint's scale_factor is used as is")
    return out


