"""The opt-in deviations of stage-3 training from the paper, in one checked, immutable object.

Every field defaults to the published behaviour; :class:`disdiff.training.disdiff_module.DisDiffModule`
takes them as ``model.params`` keys (so configs and checkpoints name them one by one) and keeps them
here. Each was added for an experiment of docs/EXPERIMENTS.md, which names it.

* ``dis_weight_normalize`` (false): divide the disentangling loss's sample weights by their batch
  mean (:func:`disdiff.models.disentangling_loss.normalized_weights`), so the loss acts while the
  shift field G is still small.
* ``dis_weight_flat_in_t`` (false): the disentangling loss's sample weight is ``w_b = mean_chw G_{c_b}²``,
  the published "Z" weight ``mean (z̃0 − z̃0^c)² = (1 − ᾱ_t)²/ᾱ_t · mean G_{c_b}²`` without its
  schedule factor. That factor spans six orders of magnitude over t and puts ~99% of the published
  weight on t > 700, where the x0 prediction shows the hues but not the object's geometry (E36).
  Only for ``dis_loss_type: Z``; ``dis_weight`` sets the scale.
* ``dis_weight_floor`` (0: the published weight): ``ρ`` in [0, 1]; a sample's disentangling weight
  is raised to at least ``ρ`` times the weight its strongest unit's field would give on the same
  sample and t (:func:`disdiff.models.disentangling_loss.floored_weights`), so a unit whose field
  has died is still asked for an identifiable effect (D16, E82). Only for ``dis_loss_type: Z``.
* ``dis_weight_cap`` (null: no cap): ``c > 0``; a sample's disentangling weight is at most ``c``
  (:func:`disdiff.models.disentangling_loss.capped_weights`, applied after the floor). The published
  weight grows with ``G²``; in E116 and M20 seed 0 it jumped ~100x within a few hundred steps, the
  disentangling term outgrew L_r and the run blew up (L_r up 1.5-5x). The cap bounds the term.
* ``dis_reencode_latent`` (false: decode the x0 predictions to images and re-encode the images): the
  re-encoder reads the predicted latents themselves, ``Ê(z̃0)`` in place of ``Ê(D(z̃0))``. Only for an
  encoder that reads latents (``encoder_config.backbone: dpm``), whose first step on an image is to
  encode it to a latent again, and only for ``dis_loss_type: Z`` (whose weight needs no images). It
  skips a stage-1 decoding and encoding per re-encoding, with their backward: the small step fell from
  0.64-0.66 to 0.43-0.44 s on 2 threads (D62), and a trial learned the same per step (E128).
* ``train_reencoder`` (false; the original's ``train_enc_flag``): the disentangling loss re-encodes
  with the live encoder instead of a frozen copy, so its gradient also reaches the encoder's weights
  through the re-encodings, not only through the shift decoder's conditioning.
  ``train_reencoder_until`` (null: for the whole run) ends that at an optimizer step: the live
  encoder before it, the published frozen copy from it on. The live re-encoder learns the object's
  hue better early, and the frozen one lets a geometric unit grow (D21, E92, E93). Only with
  ``train_reencoder``.
* ``encoder_lr_multiplier`` (1): the image encoder's learning rate is the shift decoder's times this
  (a second AdamW parameter group). ``encoder_lr_boost`` (null: none): ``[from_step, factor]``; from
  that optimizer step on the encoder's learning rate is multiplied by ``factor`` as well (E97: a
  faster encoder once the frozen re-encoder of ``train_reencoder_until`` has taken over).
* ``dis_logit_scale`` (1): an inverse temperature on the disentangling cross-entropies' logits
  (norms of code differences).
* ``dis_weight_ramp`` (null: the constant published weight): ``[start, end]`` optimizer steps; the
  disentangling loss is off before ``start`` (and not computed, which saves its decode and
  re-encodings), then its weight rises linearly to ``dis_weight`` at ``end``. While the units are
  still hue mixtures the loss's cross-entropies can sit above chance, and the quickest way down is
  to shrink every field: in one seed of four that switched the shift decoder off for good
  (EXPERIMENTS, D14), which a ramp of [800, 1600] prevented (E71).
* ``code_kl_weight`` (0: the published deterministic code): the encoder gets a log-variance head,
  the shift decoder is conditioned on a draw ``z = μ + σ·ε`` and the loss adds this weight times the
  KL of the code to ``N(0, I)`` (:mod:`disdiff.models.code_prior`). The disentangling loss,
  evaluation and sampling read ``μ``. ``code_kl_ramp`` (``[start, end]``, default null) ramps the
  weight as ``dis_weight_ramp`` does: the shift decoder starts at G = 0, so at first the code cannot
  lower L_r, and a KL at full weight collapses it to the prior within a few hundred steps (E19).
* ``nested_unit_dropout`` (0: L_r over all units): with this probability a sample's L_r uses
  ``Σ_{k<K} G_k`` with ``K ~ U{1..N}`` (nested dropout, :mod:`disdiff.models.nested_dropout`),
  which orders the units and removes the reward for a unit copying an earlier one.
* ``progressive_units`` (0: every unit from the start): unit k joins L_r, and the disentangling
  loss's choice of unit, only from optimizer step ``k · progressive_units`` on.
* ``timestep_focus`` (null: ``t ~ U{0..T−1}``): ``[t_max, fraction]``; each sample's t is drawn from
  ``U{0..t_max−1}`` with probability ``fraction``, else uniformly
  (:func:`disdiff.diffusion.timesteps.sample_timesteps`), which gives small t, where the object's
  geometry matters most relative to the hues, more of the training signal.
* ``unit_decorrelation_weight`` (0: no such term): the loss adds this weight times the mean squared
  batch correlation between dimensions of different units
  (:func:`disdiff.models.unit_decorrelation.cross_unit_correlation`), which makes a unit that
  copies another unit's factor pay for it.
* ``unit_dependence_weight`` (0: no such term): the loss adds this weight times the mean kernel CKA
  (normalised HSIC with Gaussian kernels) between different units over the batch
  (:func:`disdiff.models.unit_dependence.cross_unit_dependence`), which, unlike the correlation,
  also makes a non-monotone copy or a mixture of another unit's factors pay.
* ``field_alignment_weight`` (0: no such term): the loss adds this weight times the mean over
  samples and pairs of units of the squared cosine between the two units' shift fields
  (:func:`disdiff.models.field_alignment.cross_unit_field_alignment`), so a unit whose field pushes
  the latent the way another unit's does pays for it from the moment it forms, whatever its size
  (D26: early in training every unit's field points the same way).
* ``unit_tc_weight`` (0: no such term): the loss adds this weight times the units' total correlation,
  estimated by a discriminator trained alongside to tell the code from its unit-permuted copy
  (:mod:`disdiff.models.unit_total_correlation`, after FactorVAE), which, unlike a one-batch
  dependence measure, learns over the run to see copies of any form. (In E56-E57 it removed the
  copies but the units became hue mixtures, not the geometry.)
* ``unit_tc_lr_multiplier`` (10; used only with ``unit_tc_weight > 0``): the discriminator's learning
  rate as a multiple of the base one. At 1x it could not keep up with the moving code (its loss
  stayed near ln 2 while units copied the floor hue at correlation 0.9-0.99, which a fresh
  discriminator at the same rate tells apart within 100 steps of frozen codes: EXPERIMENTS, E54-E55).
* ``rec_highpass_weight`` (0: L_r alone): the loss adds this weight times L_hp, the same L1 or L2
  loss on the spatial forward differences of the eps error
  (:func:`disdiff.diffusion.highpass_loss.highpass_reconstruction_loss`). A hue that fills the floor or
  the wall is a near-constant offset the differences remove, while the object's geometry moves edges
  they keep, so the term asks relatively more of the geometry (EXPERIMENTS, session 24). With ``l2``
  the minimiser is unchanged (the conditional mean of ε).
* ``unit_fourier_features`` (0: the published ``repre_embed = Linear(d, E)``): the shift decoder
  embeds each unit's code through ``F`` fixed Fourier features first
  (:mod:`disdiff.models.unit_embedding`), so close values of a one-dimensional unit, or the levels
  of a factor with no order, can get distant embeddings from the first step (D10).
* ``unit_reset`` (null: never): ``[every, threshold, until]``; every ``every`` optimizer steps up to
  step ``until``, a unit whose code is predicted by the units before it with R² above
  ``threshold`` gets its rows of the encoder's output layer re-drawn
  (:mod:`disdiff.training.unit_reset`), so that a copy made early can learn what no unit holds yet.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from disdiff.config import ConfigError
from disdiff.models.image_encoder import encoder_switches_in_use

Ramp = tuple[int, int]


def check_ramp(ramp: Sequence[int] | None, name: str) -> Ramp | None:
    """``[start, end]`` optimizer steps with ``0 <= start <= end`` (a list, tuple or ListConfig), or None."""
    if ramp is None:
        return None
    ramp = [v for v in ramp]
    if (len(ramp) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ramp)
            or any(int(v) != v or v < 0 for v in ramp) or ramp[1] < ramp[0]):
        raise ConfigError(f"{name} must be [start, end] optimizer steps with 0 <= start <= end, got {ramp}")
    return int(ramp[0]), int(ramp[1])


def is_whole_number(value: Any) -> bool:
    """An ``int`` (not a ``bool``) that is ``>= 0``: a count of steps or frequencies."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def ramp_factor(ramp: Ramp | None, step: int) -> float:
    """0 before ``start``, rising linearly, 1 from ``end`` on (1 everywhere without a ramp)."""
    if ramp is None:
        return 1.0
    start, end = ramp
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start + 1) / (end - start + 1)


@dataclass(frozen=True)
class Deviations:
    """The opt-in switches (module docstring); build it with :meth:`checked`."""

    dis_weight_normalize: bool = False
    dis_weight_flat_in_t: bool = False
    dis_weight_floor: float = 0.0
    dis_weight_cap: float | None = None
    dis_reencode_latent: bool = False
    train_reencoder: bool = False
    train_reencoder_until: int | None = None
    encoder_lr_multiplier: float = 1.0
    encoder_lr_boost: tuple[int, float] | None = None
    dis_logit_scale: float = 1.0
    dis_weight_ramp: Ramp | None = None
    code_kl_weight: float = 0.0
    code_kl_ramp: Ramp | None = None
    nested_unit_dropout: float = 0.0
    progressive_units: int = 0
    timestep_focus: tuple[int, float] | None = None
    unit_decorrelation_weight: float = 0.0
    unit_dependence_weight: float = 0.0
    field_alignment_weight: float = 0.0
    unit_tc_weight: float = 0.0
    unit_tc_lr_multiplier: float = 10.0
    unit_reset: tuple[int, float, int] | None = None
    rec_highpass_weight: float = 0.0
    unit_fourier_features: int = 0

    @classmethod
    def checked(cls, **values: Any) -> "Deviations":
        """Validate config values (ConfigError naming the key) and normalise their types."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown deviation switch(es) {sorted(unknown)}")
        v = {f.name: values.get(f.name, f.default) for f in fields(cls)}
        for name in ("encoder_lr_multiplier", "dis_logit_scale", "unit_tc_lr_multiplier"):
            if float(v[name]) <= 0:
                raise ConfigError(f"{name} must be > 0, got {v[name]}")
        for name in ("unit_decorrelation_weight", "unit_dependence_weight", "field_alignment_weight",
                     "unit_tc_weight", "rec_highpass_weight"):
            if float(v[name]) < 0:
                raise ConfigError(f"{name} must be >= 0, got {v[name]}")
        if not 0.0 <= float(v["dis_weight_floor"]) <= 1.0:
            raise ConfigError(f"dis_weight_floor must be in [0, 1], got {v['dis_weight_floor']}")
        cap = v["dis_weight_cap"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not float(cap) > 0):
            raise ConfigError(f"dis_weight_cap must be a number > 0 or null, got {cap!r}")
        if float(v["code_kl_weight"]) < 0:
            raise ConfigError(f"code_kl_weight must be >= 0, got {v['code_kl_weight']}")
        if not 0.0 <= float(v["nested_unit_dropout"]) <= 1.0:
            raise ConfigError(f"nested_unit_dropout must be a probability in [0, 1], got {v['nested_unit_dropout']}")
        fourier = v["unit_fourier_features"]
        if not is_whole_number(fourier):
            raise ConfigError(f"unit_fourier_features must be a whole number of frequencies >= 0, got {fourier!r}")
        units = v["progressive_units"]
        if not is_whole_number(units):
            raise ConfigError(f"progressive_units must be a whole number of steps >= 0, got {units!r}")
        focus = v["timestep_focus"]
        if focus is not None:
            focus = [x for x in focus]
            if (len(focus) != 2 or isinstance(focus[0], bool) or not isinstance(focus[0], int) or focus[0] < 1
                    or not isinstance(focus[1], (int, float)) or not 0.0 <= float(focus[1]) <= 1.0):
                raise ConfigError(f"timestep_focus must be [t_max >= 1 (an integer), fraction in [0, 1]], got {focus}")
            focus = (int(focus[0]), float(focus[1]))
        until = v["train_reencoder_until"]
        if until is not None:
            if not is_whole_number(until):
                raise ConfigError(f"train_reencoder_until must be a whole number of steps >= 0 or null, got {until!r}")
            if not v["train_reencoder"]:
                raise ConfigError("train_reencoder_until is set but train_reencoder is false: it says when the live "
                                  "re-encoder stops, so it needs train_reencoder: true")
        boost = v["encoder_lr_boost"]
        if boost is not None:
            boost = [x for x in boost]
            if (len(boost) != 2 or any(isinstance(x, bool) for x in boost) or not isinstance(boost[0], int)
                    or boost[0] < 0 or not isinstance(boost[1], (int, float)) or not float(boost[1]) > 0):
                raise ConfigError(f"encoder_lr_boost must be [from_step >= 0 (an integer), factor > 0], got {boost}")
            boost = (int(boost[0]), float(boost[1]))
        reset = v["unit_reset"]
        if reset is not None:
            reset = [x for x in reset]
            if (len(reset) != 3 or any(isinstance(x, bool) for x in reset)
                    or not isinstance(reset[0], int) or reset[0] < 1
                    or not isinstance(reset[1], (int, float)) or not 0.0 < float(reset[1]) < 1.0
                    or not isinstance(reset[2], int) or reset[2] < 0):
                raise ConfigError("unit_reset must be [every >= 1 (steps), threshold in (0, 1) (R²), "
                                  f"until >= 0 (step)], got {reset}")
            reset = (int(reset[0]), float(reset[1]), int(reset[2]))
        return cls(
            dis_weight_normalize=bool(v["dis_weight_normalize"]),
            dis_weight_flat_in_t=bool(v["dis_weight_flat_in_t"]),
            dis_weight_floor=float(v["dis_weight_floor"]),
            dis_weight_cap=None if cap is None else float(cap),
            dis_reencode_latent=bool(v["dis_reencode_latent"]),
            train_reencoder=bool(v["train_reencoder"]),
            train_reencoder_until=until,
            encoder_lr_multiplier=float(v["encoder_lr_multiplier"]),
            encoder_lr_boost=boost,
            dis_logit_scale=float(v["dis_logit_scale"]),
            dis_weight_ramp=check_ramp(v["dis_weight_ramp"], "dis_weight_ramp"),
            code_kl_weight=float(v["code_kl_weight"]),
            code_kl_ramp=check_ramp(v["code_kl_ramp"], "code_kl_ramp"),
            nested_unit_dropout=float(v["nested_unit_dropout"]),
            progressive_units=units,
            timestep_focus=focus,
            unit_decorrelation_weight=float(v["unit_decorrelation_weight"]),
            unit_dependence_weight=float(v["unit_dependence_weight"]),
            field_alignment_weight=float(v["field_alignment_weight"]),
            unit_tc_weight=float(v["unit_tc_weight"]),
            unit_tc_lr_multiplier=float(v["unit_tc_lr_multiplier"]),
            unit_reset=reset,
            rec_highpass_weight=float(v["rec_highpass_weight"]),
            unit_fourier_features=fourier,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Deviations":
        """The checked switches among a stage-3 ``model.params`` mapping; its other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls.checked(**{key: value for key, value in params.items() if key in names})

    def in_use(self) -> dict[str, Any]:
        """The switches set away from the published behaviour, by name (empty: the paper's training)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}

    def dis_weight_factor(self, step: int) -> float:
        """The factor on ``dis_weight`` at optimizer step ``step`` (1 without a ramp)."""
        return ramp_factor(self.dis_weight_ramp, step)

    def code_kl_factor(self, step: int) -> float:
        """The factor on ``code_kl_weight`` at optimizer step ``step`` (1 without a ramp)."""
        return ramp_factor(self.code_kl_ramp, step)

    def live_reencoder(self, step: int) -> bool:
        """Whether the disentangling loss re-encodes with the live encoder at optimizer step ``step``."""
        return self.train_reencoder and (self.train_reencoder_until is None or step < self.train_reencoder_until)

    def active_units(self, num_units: int, step: int) -> int:
        """How many units (the first ones) take part in the losses at ``step``."""
        if self.progressive_units == 0:
            return num_units
        return min(num_units, 1 + step // self.progressive_units)


def deviations_in_use(params: Mapping[str, Any]) -> dict[str, Any]:
    """Every opt-in deviation a stage-3 ``model.params`` mapping sets away from the paper: the loss and
    training switches by name, the encoder's (``encoder_config``) as ``encoder_config.<key>``."""
    used = Deviations.from_params(params).in_use()
    encoder = encoder_switches_in_use(params.get("encoder_config") or {})
    used.update({f"encoder_config.{key}": value for key, value in encoder.items()})
    return used
