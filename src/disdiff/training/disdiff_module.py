"""Stage 3: DisDiff on top of a frozen first stage and a frozen pre-trained LDM (spec section 4).

Trained: the shift decoder (``denoiser.shift_middle_block``, ``shift_output_blocks``,
``shift_out``), ``denoiser.repre_embed``, ``denoiser.part_emb``, ``denoiser.part_latents`` and the
image ``encoder``. Frozen: the stage-2 UNet (``denoiser.unet``) and the ``first_stage``.

Per batch (spec 4.6): ``z0 = s·E_AE(x)`` (no grad), ``z = encoder(x)`` (grad), ``t ~ U{0..T−1}``,
``z_t = q_sample(z0, t, ε)``, one sampled unit ``c_b`` per sample, ``(pred, G) = denoiser(z_t, t, z)``;

* ``L_r = mean_b mean_chw |ε − (pred + shift_coef_t·Σ_k G_k)|``;
* the disentangling loss of :mod:`disdiff.models.disentangling_loss` with ``G_{c_b}``;
* ``L = L_r + mean_b dis_b``. Logged as ``train/loss_rec``, ``train/loss_dis``, ``train/loss``.
* opt-in (``code_kl_weight > 0``, not in the paper): ``z`` is drawn from the encoder's diagonal
  Gaussian and ``L`` gains ``code_kl_weight · mean_b KL(q(z|x) || N(0, I))`` (``train/loss_kl``).
* opt-in (``nested_unit_dropout > 0``, not in the paper): L_r sums only the fields of the first
  ``K_b`` units of a truncated sample (:mod:`disdiff.models.nested_dropout`).
* opt-in (``unit_decorrelation_weight > 0``, not in the paper): ``L`` gains that weight times the
  units' mean squared cross-correlation over the batch (``train/unit_correlation``).
* opt-in (``unit_dependence_weight > 0``, not in the paper): ``L`` gains that weight times the
  units' mean pairwise kernel CKA over the batch (``train/unit_dependence``).
* opt-in (``field_alignment_weight > 0``, not in the paper): ``L`` gains that weight times the mean
  squared cosine between two units' shift fields on the same sample (``train/field_alignment``).
* opt-in (``unit_tc_weight > 0``, not in the paper): ``L`` gains that weight times the units' total
  correlation estimated by ``tc_discriminator`` (``train/unit_tc``), plus the discriminator's own
  logistic loss (``train/tc_discriminator_loss``), whose gradient reaches the discriminator only.

A checkpoint of this module is self-contained: the stage-2 configs and scale factor are stored in
its hyper-parameters (``stage2``) and the frozen weights in its state dict, so a trained run loads
without the stage-2 checkpoint file.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from disdiff.config import ConfigError, plain
from disdiff.diffusion.ema import EMA
from disdiff.diffusion.highpass_loss import highpass_reconstruction_loss
from disdiff.diffusion.lr_schedule import linear_warmup, stepped_up
from disdiff.diffusion.schedule import DiffusionSchedule, extract, q_sample
from disdiff.diffusion.timesteps import sample_timesteps
from disdiff.models.disentangling_loss import FrozenReencoder, disentangling_loss, sample_concepts
from disdiff.models.dpm_feature_encoder import DPMFeatureEncoder
from disdiff.models.code_prior import gaussian_kl, reparameterize
from disdiff.models.image_encoder import split_units
from disdiff.models.nested_dropout import reconstruction_unit_mask
from disdiff.models.shift_decoder import UNIT_PASSES, DisDiffDenoiser
from disdiff.models.unit_total_correlation import TotalCorrelationDiscriminator
from disdiff.training.batches import images_from_batch
from disdiff.training.deviations import Deviations
from disdiff.training.ema_step import BatchEMAUpdate
from disdiff.training.encoder_setup import fit_feature_whitening, fit_ica_readout
from disdiff.utils.precision import check_bf16_setting, resolve_bf16
from disdiff.training.stage3_parts import (
    build_image_encoder, check_stage3_options, load_frozen_stages, resolve_ldm_checkpoint,
)
from disdiff.training.unit_penalties import LOGGED_TERMS, unit_penalty_terms
from disdiff.training.unit_reset import UnitReset
from disdiff.utils.random import draw

log = logging.getLogger(__name__)

__all__ = ["DisDiffModule", "resolve_ldm_checkpoint"]


class DisDiffModule(BatchEMAUpdate, pl.LightningModule):
    """DisDiff (stage 3). See the module docstring.

    ``ldm_ckpt``: the stage-2 run directory or checkpoint; its UNet is loaded with the EMA weights
    (``use_ema_unet=True``, default) or the raw training weights (``use_ema_unet=False``).
    ``encoder_config``: keyword arguments of :class:`ImageEncoder` (``width``, and optionally
    ``resolution`` / ``in_channels``, which default to the first stage's image geometry), or a
    ``target``/``params`` block of a custom encoder returning ``(B, num_units·unit_dim)``.
    ``stage2`` is filled in automatically (configs and scale factor of the loaded stage 2) and is
    what makes checkpoints self-contained; do not set it in a config.

    Speed switches: ``unit_pass`` (``auto`` | ``batched`` | ``looped``: how the N shift-decoder
    passes run, same mathematics; see :func:`disdiff.models.shift_decoder.choose_unit_pass`) and
    ``autocast_bf16`` (true | false | auto; default false; changes numerics): the image encoder and
    the denoiser (frozen UNet and shift decoder) run under bfloat16 autocast in the training loss;
    the parameters, GroupNorm, attention, the first-stage latents ``z0``, the loss arithmetic and
    the disentangling-loss path stay float32. ``autocast_bf16_dis_path`` (true | false | auto;
    default false; needs ``autocast_bf16``) also runs that path — the first-stage decoder (its
    costliest network at 64×64) and the re-encoder — in bf16. Its logits compare two re-encodings
    (δ_k = ‖ẑ_k − ẑ^c_k‖) whose difference bf16 resolves only to about 2⁻⁸ of their size; while
    the shift field G is small (every run starts at G = 0) that error swamps them and the
    disentangling gradient goes wrong (cosine 0.41 to float64 at G × 0.01 in the published-size
    model, issue 13), so every shipped config keeps it false. tests/test_speed_options.py bounds
    both switches' difference to float32, and the disentangling gradient at small G to float64.
    ``auto`` is on only on CPUs with native bf16 instructions and off on accelerators
    (:mod:`disdiff.utils.precision`); the published stage-3 configs ship ``autocast_bf16:
    auto`` and ``autocast_bf16_dis_path: false``. The resolved setting is logged when fitting starts.
    Opt-in deviations from the paper (``dis_weight_normalize``, ``dis_weight_flat_in_t``, ``dis_weight_floor``,
    ``dis_weight_cap``, ``dis_reencode_latent``, ``train_reencoder``, ``train_reencoder_until``, ``encoder_lr_multiplier``, ``encoder_lr_boost``,
    ``dis_logit_scale``, ``dis_weight_ramp``, ``code_kl_weight``, ``code_kl_ramp``, ``nested_unit_dropout``,
    ``progressive_units``, ``timestep_focus``, ``unit_decorrelation_weight``, ``unit_dependence_weight``,
    ``field_alignment_weight``, ``unit_tc_weight``, ``unit_tc_lr_multiplier``, ``unit_reset``,
    ``rec_highpass_weight``, ``unit_fourier_features``) are ``model.params`` keys whose
    defaults are the published behaviour; they are checked and kept in :class:`disdiff.training.deviations.Deviations`
    (``self.deviations``), whose docstring defines each.
    """

    def __init__(
        self,
        ldm_ckpt: str | None = None,
        encoder_config: dict | None = None,
        num_units: int = 6,
        unit_dim: int = 32,
        use_ema_unet: bool = True,
        dis_loss_type: str = "Z",
        dis_weight: float = 0.05,
        reencoder_bn_mode: str = "eval",
        loss_type: str = "l1",
        warmup_steps: int = 10000,
        weight_decay: float = 0.01,
        use_ema: bool = True,
        ema_decay: float = 0.9999,
        learning_rate: float = 2e-6,
        log_ddim_steps: int = 50,
        log_ddim_eta: float = 1.0,
        image_key: str = "image",
        orthogonal_part_embedding: bool = True,
        released_part_convention: bool = False,
        monitor: str | None = None,
        stage2: dict | None = None,
        unit_pass: str = "auto",
        autocast_bf16: bool | str = False,
        autocast_bf16_dis_path: bool | str = False,
        dis_weight_normalize: bool = False,
        dis_weight_flat_in_t: bool = False,
        dis_weight_floor: float = 0.0,
        dis_weight_cap: float | None = None,
        dis_reencode_latent: bool = False,
        encoder_lr_multiplier: float = 1.0,
        encoder_lr_boost: Sequence[float] | None = None,
        train_reencoder: bool = False,
        train_reencoder_until: int | None = None,
        dis_weight_ramp: Sequence[int] | None = None,
        dis_logit_scale: float = 1.0,
        code_kl_weight: float = 0.0,
        code_kl_ramp: Sequence[int] | None = None,
        nested_unit_dropout: float = 0.0,
        progressive_units: int = 0,
        timestep_focus: Sequence[float] | None = None,
        unit_decorrelation_weight: float = 0.0,
        unit_dependence_weight: float = 0.0,
        field_alignment_weight: float = 0.0,
        unit_tc_weight: float = 0.0,
        unit_tc_lr_multiplier: float = 10.0,
        unit_reset: Sequence[float] | None = None,
        rec_highpass_weight: float = 0.0,
        unit_fourier_features: int = 0,
    ) -> None:
        super().__init__()
        if unit_pass not in UNIT_PASSES:
            raise ConfigError(f"unit_pass must be one of {UNIT_PASSES}, got {unit_pass!r}")
        try:
            autocast_bf16 = check_bf16_setting(autocast_bf16, "autocast_bf16")
            autocast_bf16_dis_path = check_bf16_setting(autocast_bf16_dis_path, "autocast_bf16_dis_path")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if autocast_bf16_dis_path is not False and autocast_bf16 is False:
            raise ConfigError(f"autocast_bf16_dis_path: {autocast_bf16_dis_path} needs autocast_bf16: true or auto")
        encoder_config = plain(encoder_config) if encoder_config is not None else {}
        stage2 = plain(stage2) if stage2 is not None else None
        ldm_ckpt = None if ldm_ckpt is None else str(ldm_ckpt)
        self.deviations = Deviations.checked(
            dis_weight_normalize=dis_weight_normalize, dis_weight_flat_in_t=dis_weight_flat_in_t,
            dis_weight_floor=dis_weight_floor, dis_weight_cap=dis_weight_cap, dis_reencode_latent=dis_reencode_latent,
            train_reencoder=train_reencoder,
            train_reencoder_until=train_reencoder_until,
            encoder_lr_multiplier=encoder_lr_multiplier, encoder_lr_boost=encoder_lr_boost,
            dis_logit_scale=dis_logit_scale,
            dis_weight_ramp=dis_weight_ramp, code_kl_weight=code_kl_weight, code_kl_ramp=code_kl_ramp,
            nested_unit_dropout=nested_unit_dropout, progressive_units=progressive_units,
            timestep_focus=timestep_focus, unit_decorrelation_weight=unit_decorrelation_weight,
            unit_dependence_weight=unit_dependence_weight, field_alignment_weight=field_alignment_weight,
            unit_tc_weight=unit_tc_weight,
            unit_tc_lr_multiplier=unit_tc_lr_multiplier, unit_reset=unit_reset,
            rec_highpass_weight=rec_highpass_weight, unit_fourier_features=unit_fourier_features)
        check_stage3_options(self.deviations, dis_loss_type=dis_loss_type, reencoder_bn_mode=reencoder_bn_mode,
                             loss_type=loss_type, dis_weight=dis_weight, num_units=num_units, unit_dim=unit_dim,
                             custom_encoder="target" in encoder_config)
        self.save_hyperparameters()

        # -- frozen stages 1 and 2 ---------------------------------------------------------------
        unet, first_stage, stage2 = load_frozen_stages(ldm_ckpt, bool(use_ema_unet), stage2)
        self.hparams["stage2"] = stage2
        self.first_stage = first_stage
        self.schedule = DiffusionSchedule(**(stage2.get("schedule_config") or {}))
        focus = self.deviations.timestep_focus
        if focus is not None and focus[0] > self.schedule.num_timesteps:
            raise ConfigError(f"timestep_focus t_max={focus[0]} exceeds the stage-2 schedule's "
                              f"{self.schedule.num_timesteps} timesteps")
        # The stage-2 value on every rank (it is set at construction, not in a rank-0 hook).
        self.register_buffer("scale_factor", torch.tensor(float(stage2["scale_factor"]), dtype=torch.float32))

        # -- DisDiff parts -----------------------------------------------------------------------
        self.num_units = int(num_units)
        self.unit_dim = int(unit_dim)
        self.denoiser = DisDiffDenoiser(
            unet, self.num_units, self.unit_dim,
            orthogonal_part_embedding=orthogonal_part_embedding, released_part_convention=released_part_convention,
            unit_pass=unit_pass, unit_fourier_features=self.deviations.unit_fourier_features,
        )
        try:
            self.encoder = build_image_encoder(encoder_config, stage2["first_stage_config"], self.num_units,
                                               self.unit_dim, stochastic=self.deviations.code_kl_weight > 0,
                                               frozen=(first_stage, unet, float(stage2["scale_factor"])))
        except ConfigError as exc:
            if not stage2.get("source"):
                raise
            latent = f"{int(unet.in_channels)}x{int(unet.image_size)}x{int(unet.image_size)}"
            raise ConfigError(f"stage-2 checkpoint {stage2['source']!r} (latents {latent}) does not fit this "
                              f"stage-3 config: {exc}") from exc
        if self.deviations.dis_reencode_latent and not isinstance(self.encoder, DPMFeatureEncoder):
            raise ConfigError("dis_reencode_latent: true needs an encoder that reads latents (encoder_config.backbone: "
                              f"dpm), got {type(self.encoder).__name__}; with another encoder set "
                              "model.params.dis_reencode_latent=false")
        if self.deviations.unit_reset is not None and not isinstance(getattr(self.encoder, "fc", None), nn.Linear):
            raise ConfigError("unit_reset needs the built-in image encoder with one shared output layer "
                              "(encoder_config: the CNN backbone, without 'target' or unit_branches)")
        self.last_codes: torch.Tensor | None = None  # the last training batch's codes, for unit_reset
        #: Dataset indices -> the training images' frozen encoder features, for a head on frozen features
        #: (set by :class:`disdiff.pipeline.background_features.TrainOnChildFeatures`); None: computed each step.
        self.x0_feature_lookup: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.tc_discriminator = (TotalCorrelationDiscriminator(self.num_units * self.unit_dim)
                                 if self.deviations.unit_tc_weight > 0 else None)
        self.reencoder = FrozenReencoder(reencoder_bn_mode)
        # EMA of the trainable denoiser parameters only (the frozen UNet is excluded because it
        # does not require grad; the encoder is never averaged, spec 1.3).
        self.ema = EMA(self.denoiser, decay=ema_decay) if use_ema else None

        self.dis_loss_type = dis_loss_type
        self.dis_weight = float(dis_weight)
        self.loss_type = loss_type
        self.warmup_steps = int(warmup_steps)
        self.weight_decay = float(weight_decay)
        self.learning_rate = float(learning_rate)
        self.log_ddim_steps = int(log_ddim_steps)
        self.log_ddim_eta = float(log_ddim_eta)
        self.image_key = image_key
        self.monitor = monitor
        self.autocast_bf16: bool | str = autocast_bf16
        self.autocast_bf16_dis_path: bool | str = autocast_bf16_dis_path

        unet_in = int(unet.in_channels)
        fs_ch = getattr(first_stage, "latent_channels", None)
        if fs_ch is not None and int(fs_ch) != unet_in:
            raise ConfigError(f"stage-2 UNet in_channels={unet_in} does not match the first stage's latents ({fs_ch})")

    # -- parameters and modes -------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The optimiser's parameters: shift decoder, repre_embed, part_emb, part_latents, encoder."""
        yield from self.denoiser.trainable_parameters()
        yield from self.encoder.parameters()

    def train(self, mode: bool = True) -> "DisDiffModule":
        super().train(mode)
        self.denoiser.unet.eval()
        self.first_stage.eval()
        return self

    # -- inputs and latents ---------------------------------------------------------------------
    def get_input(self, batch: Any) -> torch.Tensor:
        return images_from_batch(batch, self.image_key)

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled first-stage latents ``s·E_AE(x)`` (no gradient)."""
        return self.scale_factor * self.first_stage.encode_to_latent(x)

    def decode_latents(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """``D(z / s)``; differentiable w.r.t. ``z``."""
        return self.first_stage.decode_latent(z / self.scale_factor, quantize=quantize)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        unet = self.denoiser.unet
        size = int(unet.image_size)
        return int(unet.in_channels), size, size

    def encode_representation(self, x: torch.Tensor) -> torch.Tensor:
        """``z = encoder(x)`` split into units: (B, N, d). Uses the encoder's current mode."""
        return split_units(self.encoder(x), self.num_units)

    # -- losses ---------------------------------------------------------------------------------
    def bf16_in_use(self) -> tuple[bool, bool]:
        """``(denoiser and encoder, disentangling path)``: where bf16 autocast is on, on this module's device."""
        device = self.scale_factor.device
        main = resolve_bf16(self.autocast_bf16, device)
        return main, main and resolve_bf16(self.autocast_bf16_dis_path, device)

    def _autocast(self):
        """bfloat16 autocast on this module's device when ``autocast_bf16`` is on (else a no-op context)."""
        return torch.autocast(device_type=self.scale_factor.device.type, dtype=torch.bfloat16,
                              enabled=self.bf16_in_use()[0])

    def _dis_path(self, fn, *args, **kwargs) -> torch.Tensor:
        """A network call of the disentangling loss: float32, or bf16 autocast with ``autocast_bf16_dis_path``."""
        if not self.bf16_in_use()[1]:
            return fn(*args, **kwargs)
        with self._autocast():
            return fn(*args, **kwargs).float()

    def _reencode(self, images: torch.Tensor) -> torch.Tensor:
        """Ê(images): the frozen copy (published), or the live encoder with ``train_reencoder`` (until
        ``train_reencoder_until``). With ``dis_reencode_latent``, ``images`` are latents."""
        options = {"from_latent": True} if self.deviations.dis_reencode_latent else {}
        if self.deviations.live_reencoder(self._step()):
            # The original's train_enc_flag: the live encoder in its current mode (batch statistics
            # while training), so the disentangling loss also reaches the encoder's weights here.
            if getattr(self.encoder, "code_norm", None) is not None:
                # Opt-in standardize_code: re-encodings use the running statistics of real images, so a
                # batch of generated images is not re-centred on itself, which would erase a shift common
                # to the batch from the code differences.
                options["running_code_stats"] = True
            return self._dis_path(self.encoder, images, **options)
        return self._dis_path(self.reencoder, self.encoder, images, **options)

    def _dis_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """What the disentangling loss re-encodes: ``D(latents)`` (published), or the latents themselves
        with ``dis_reencode_latent``."""
        if self.deviations.dis_reencode_latent:
            return latents
        return self._dis_path(self.decode_latents, latents, quantize=False)

    def compute_losses(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        concept: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        x0_features: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """All stage-3 loss terms for images ``x``; random draws from ``generator`` when given.
        ``x0_features``: the frozen features of ``x`` when they were looked up rather than computed
        (an image encoder that is a head on frozen features)."""
        B = x.shape[0]
        device = x.device
        z0 = self.encode_images(x)
        work = torch.promote_types(x.dtype, torch.float32)  # float32 (float64 for a float64 reference)
        if self.deviations.code_kl_weight > 0:
            with self._autocast():
                mean, logvar = self.encoder.encode_distribution(x)
            mean, logvar = mean.to(work), logvar.to(work)
            code_kl = gaussian_kl(mean, logvar).mean()
            z = split_units(reparameterize(mean, logvar, generator), self.num_units)
            z_mean = split_units(mean, self.num_units)
        else:
            with self._autocast():
                if x0_features is not None:
                    z = split_units(self.encoder.code_from_features(x0_features.to(work)), self.num_units).to(work)
                elif getattr(self.encoder, "reads_training_latent", False):
                    # backbone: dpm on a VQ first stage: its step 1 is z0 / s, computed just above.
                    code = self.encoder.code_from_features(self.encoder.features_of_latent(z0, x))
                    z = split_units(code, self.num_units).to(work)
                else:
                    z = self.encode_representation(x).to(work)
            z_mean, code_kl = z, None
        if t is None:
            t = sample_timesteps(B, self.schedule.num_timesteps, generator, device, self.deviations.timestep_focus)
        if noise is None:
            noise = draw(torch.randn, z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        active = self.active_units()
        if concept is None:
            concept = sample_concepts(B, active, generator, device)
        z_t = q_sample(self.schedule, z0, t, noise)
        with self._autocast():
            pred, fields = self.denoiser(z_t, t, z)
        pred, fields = pred.to(work), fields.to(work)
        keep = reconstruction_unit_mask(B, self.num_units, active, self.deviations.nested_unit_dropout,
                                        generator, device)
        if keep is not None:  # opt-in nested dropout / progressive units
            fields_in_rec = fields * keep.to(fields.dtype).view(B, self.num_units, *([1] * (fields.dim() - 2)))
        else:
            fields_in_rec = fields
        out_grad = fields_in_rec.sum(dim=1)
        shift_coef = extract(self.schedule.shift_coef, t, z_t.shape).to(z_t)
        eps_hat = pred + shift_coef * out_grad
        diff = noise - eps_hat
        per_elem = diff.abs() if self.loss_type == "l1" else diff * diff
        loss_rec = per_elem.flatten(1).mean(1).mean()

        result: dict[str, Any] = {"z": z, "t": t, "noise": noise, "z_t": z_t, "pred": pred, "fields": fields,
                                  "concept": concept, "loss_rec": loss_rec}
        dis_weight = self.current_dis_weight()
        if dis_weight > 0:
            sub_grad = fields[torch.arange(B, device=device), concept]
            dis = disentangling_loss(
                schedule=self.schedule, x_t=z_t, t=t, pred=pred, sub_grad=sub_grad, z=z_mean, concept=concept,
                decode=self._dis_decode,
                reencode=self._reencode,
                loss_type=self.dis_loss_type, dis_weight=dis_weight,
                normalize_weight=self.deviations.dis_weight_normalize,
                flat_in_t=self.deviations.dis_weight_flat_in_t, logit_scale=self.deviations.dis_logit_scale,
                weight_floor=self.deviations.dis_weight_floor, all_fields=fields,
                weight_cap=self.deviations.dis_weight_cap,
            )
            loss_dis = dis.loss.mean()
            result["dis"] = dis
        else:
            loss_dis = torch.zeros((), device=device)
        result["loss_dis"] = loss_dis
        result["loss"] = loss_rec + loss_dis
        if self.deviations.rec_highpass_weight > 0:  # opt-in: L_r's term on the error's spatial differences
            result["loss_rec_highpass"] = highpass_reconstruction_loss(diff, self.loss_type)
            result["loss"] = result["loss"] + self.deviations.rec_highpass_weight * result["loss_rec_highpass"]
        if code_kl is not None:
            result["code_kl"] = code_kl
            result["loss"] = result["loss"] + self.current_code_kl_weight() * code_kl
        penalties, added = unit_penalty_terms(z_mean, self.deviations, self.tc_discriminator, generator,
                                              fields=fields)
        result.update(penalties)
        if added is not None:  # opt-in unit penalties (training/unit_penalties.py)
            result["loss"] = result["loss"] + added
        return result

    def current_dis_weight(self) -> float:
        """``dis_weight``, scaled by the opt-in ramp at the current optimizer step."""
        return self.dis_weight * self.deviations.dis_weight_factor(self._step())

    def current_code_kl_weight(self) -> float:
        """``code_kl_weight``, scaled by the opt-in ``code_kl_ramp`` at the current optimizer step."""
        return self.deviations.code_kl_weight * self.deviations.code_kl_factor(self._step())

    def active_units(self) -> int:
        """How many units (the first ones) take part in the losses at the current step."""
        return self.deviations.active_units(self.num_units, self._step())

    def _step(self) -> int:
        return self.global_step if self._trainer is not None else 0

    def on_fit_start(self) -> None:
        main, dis_path = self.bf16_in_use()
        log.info("stage 3 precision on %s: denoiser and encoder %s, disentangling path %s "
                 "(autocast_bf16=%s, autocast_bf16_dis_path=%s)", self.scale_factor.device.type,
                 "bf16" if main else "float32", "bf16" if dis_path else "float32",
                 self.autocast_bf16, self.autocast_bf16_dis_path)

    def on_train_start(self) -> None:
        # The DPM head's opt-in fixed feature whitening: fitted on training images before the first step.
        def to_images(batch: Any) -> torch.Tensor:
            return self.get_input(batch).to(self.scale_factor.device)

        fit_feature_whitening(self.encoder, self.trainer.train_dataloader, to_images,
                              lambda tensor: self.trainer.strategy.reduce(tensor, reduce_op="sum"))
        # Its opt-in ICA read-out (ica_init), likewise; every process takes the first process's fit.
        fit_ica_readout(self.encoder, self.trainer.train_dataloader, to_images,
                        lambda obj: self.trainer.strategy.broadcast(obj, src=0))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.get_input(batch)
        lookup = self.x0_feature_lookup if isinstance(batch, Mapping) and "index" in batch else None
        out = self.compute_losses(x, x0_features=lookup(batch["index"]).to(x.device) if lookup else None)
        B = x.shape[0]
        if self.deviations.unit_reset is not None:
            self.last_codes = out["z"].detach()
        self.log("train/loss_rec", out["loss_rec"], prog_bar=True, on_step=True, on_epoch=True, batch_size=B)
        self.log("train/loss_dis", out["loss_dis"], prog_bar=True, on_step=True, on_epoch=True, batch_size=B)
        self.log("train/loss", out["loss"], on_step=True, on_epoch=True, batch_size=B)
        if "code_kl" in out:
            self.log("train/loss_kl", out["code_kl"], on_step=True, on_epoch=False, batch_size=B)
        for key in LOGGED_TERMS + ("loss_rec_highpass",):
            if key in out:
                self.log(f"train/{key}", out[key], on_step=True, on_epoch=False, batch_size=B)
        if "dis" in out:
            dis = out["dis"]
            self.log("train/dis_ce_variant", dis.ce_variant.mean(), on_step=True, on_epoch=False, batch_size=B)
            self.log("train/dis_ce_invariant", dis.ce_invariant.mean(), on_step=True, on_epoch=False, batch_size=B)
            self.log("train/dis_sample_weight", dis.weight.mean(), on_step=True, on_epoch=False, batch_size=B)
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr_abs", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                     batch_size=B)
        return out["loss"]

    def configure_callbacks(self) -> list[pl.Callback]:
        if self.deviations.unit_reset is None:
            return []
        return [UnitReset(*self.deviations.unit_reset)]

    def ema_target(self) -> nn.Module:
        return self.denoiser  # the EMA is updated after every batch (training/ema_step.py)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.get_input(batch)
        gen = torch.Generator().manual_seed(1234 + batch_idx)
        out = self.compute_losses(x, generator=gen)
        B = x.shape[0]
        self.log("val/loss_rec", out["loss_rec"], on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        self.log("val/loss_dis", out["loss_dis"], on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        self.log("val/loss", out["loss"], on_step=False, on_epoch=True, batch_size=B, sync_dist=True)
        return out["loss"]

    def configure_optimizers(self) -> Any:
        # Two groups only so that the encoder's lr can differ (encoder_lr_multiplier, default 1:
        # then this is exactly one AdamW over all trainable parameters, as published).
        groups = [{"params": list(self.denoiser.trainable_parameters()), "lr": self.learning_rate},
                  {"params": list(self.encoder.parameters()),
                   "lr": self.learning_rate * self.deviations.encoder_lr_multiplier}]
        if self.tc_discriminator is not None:  # opt-in unit_tc_weight
            groups.append({"params": list(self.tc_discriminator.parameters()),
                           "lr": self.learning_rate * self.deviations.unit_tc_lr_multiplier})
        opt = torch.optim.AdamW(groups, lr=self.learning_rate, weight_decay=self.weight_decay)
        # one warm-up for every group (what LambdaLR does with a single function), except that the
        # opt-in encoder_lr_boost gives the encoder's group (index 1) its own stepped-up multiplier
        lambdas = [linear_warmup(self.warmup_steps)] * len(groups)
        if self.deviations.encoder_lr_boost is not None:
            lambdas[1] = stepped_up(lambdas[1], *self.deviations.encoder_lr_boost)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # -- EMA ------------------------------------------------------------------------------------
    def ema_scope(self):
        """Context manager: the denoiser holds its EMA weights inside (no-op without EMA)."""
        import contextlib

        if self.ema is None:
            return contextlib.nullcontext(self.denoiser)
        return self.ema.average_parameters(self.denoiser)

    # -- images ---------------------------------------------------------------------------------
    @torch.no_grad()
    def log_images(
        self, batch: Any, max_images: int = 8, ddim_steps: int | None = None, eta: float | None = None, seed: int = 0
    ) -> dict[str, torch.Tensor]:
        """Grids for the image logger: :func:`disdiff.inference.figures.training_grids` of the batch's first images."""
        from disdiff.inference.figures import training_grids

        steps = self.log_ddim_steps if ddim_steps is None else int(ddim_steps)
        eta = self.log_ddim_eta if eta is None else float(eta)
        return training_grids(self, self.get_input(batch)[:max_images], steps=steps, eta=eta, seed=seed)
