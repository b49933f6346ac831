"""Key names of the original DisDiff code's checkpoints and the disdiff keys they fill (spec section 10).

This module is a pure mapping: it turns the state-dict keys of a disdiff module into the keys the
original code writes for the same tensors, and matches an original state dict against them. The
conventions (docs/IMPORT_ORIGINAL.md has the full table):

* **first stage** (``VQModel`` / ``AutoencoderKL``): the same names, except that an encoder
  level's down-sampler is ``resample`` in disdiff and ``downsample`` in the original, and that the
  decoder levels are stored in forward order in disdiff (``decoder.up.0`` = lowest resolution) but
  in **reverse** order in the original (``decoder.up.<L−1−i>``, up-sampler ``upsample``);
* **UNet**: the same names, under ``model.diffusion_model.`` in the original;
* **stage-3 trained parts** (``shift_*``, ``repre_embed``, ``part_emb``, ``part_latents``): the
  same names, next to the frozen UNet's under ``model.diffusion_model.``; the part-embedding
  matrix W is copied unchanged (the original computes exp(Wᵀ − W), which disdiff's
  ``released_part_convention: true`` selects);
* **EMA shadows**: ``model_ema.`` followed by ``diffusion_model.<parameter name>`` with every dot
  removed (e.g. ``model_ema.diffusion_modelinput_blocks00weight``), plus ``model_ema.decay`` and
  ``model_ema.num_updates``; disdiff's are ``ema.<name with "." → "__">``;
* **image encoder** (Encoder4): ``cond_stage_model.encoder.<i>`` is one ``Sequential`` whose
  indices 0–14 are disdiff's ``encoder.features.<i>`` (a residual block's 3×3 conv, BN and 1×1
  conv are ``convs.1``, ``convs.2`` and ``convs.4``); index 15 is a reshape and 16 the final
  linear layer, disdiff's ``encoder.fc``;
* **schedule buffers** (``betas``, ``alphas_cumprod``, …): disdiff computes them from the config;
  the original's values, when present, must agree (they check the schedule settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from disdiff.config import ConfigError
from disdiff.diffusion.schedule import DiffusionSchedule

__all__ = [
    "KeyPlan",
    "ORIGINAL_SCHEDULE_BUFFERS",
    "first_stage_key",
    "unet_key",
    "ema_key",
    "image_encoder_key",
    "plan_autoencoder",
    "plan_ldm",
    "plan_disdiff",
    "apply_plan",
]

#: The original's registered diffusion-schedule buffers (spec 1.1), all named as disdiff's ``schedule.<name>``.
ORIGINAL_SCHEDULE_BUFFERS = DiffusionSchedule.BUFFER_NAMES
#: Original keys that are known and carry nothing disdiff needs: the constant ``logvar`` tensor
#: (zeros, spec 1.2) and the non-persistent ``lvlb_weights`` if a version saved it.
ORIGINAL_UNUSED_KEYS = frozenset({"logvar", "lvlb_weights"})

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
FIRST_STAGE_PREFIX = "first_stage_model."
IMAGE_ENCODER_PREFIX = "cond_stage_model.encoder."
#: Index of the final linear layer in the original Encoder4 ``Sequential`` (15 is the reshape).
IMAGE_ENCODER_FC_INDEX = 16
#: disdiff's residual-block layer names in the image encoder → index in the original's ``convs`` Sequential.
IMAGE_ENCODER_RESBLOCK = {"conv3": "1", "bn": "2", "conv1": "4"}


@dataclass
class KeyPlan:
    """How a disdiff state dict is filled from an original one.

    ``load``: disdiff key → original key, required. ``optional``: named groups of such pairs,
    loaded only when the checkpoint holds every key of the group with the right shapes (else the
    disdiff module keeps its initialisation and a note says so). ``compare``: disdiff key (a value
    disdiff computes itself) → original key; when the original holds it, the two must agree.
    Original keys under ``accepted_prefixes`` or in ``accepted_keys`` are known and not used.
    """

    load: dict[str, str] = field(default_factory=dict)
    optional: dict[str, dict[str, str]] = field(default_factory=dict)
    compare: dict[str, str] = field(default_factory=dict)
    accepted_prefixes: tuple[str, ...] = ()
    accepted_keys: frozenset[str] = frozenset()
    _targets: set[str] = field(default_factory=set, repr=False)

    def add(self, disdiff_key: str, original_key: str) -> None:
        """Load ``disdiff_key`` from ``original_key``; two disdiff keys may not share an original key
        (e.g. EMA names, whose dots are removed, colliding)."""
        if original_key in self._targets:
            raise ValueError(f"two disdiff keys map to the original key {original_key!r}")
        self._targets.add(original_key)
        self.load[disdiff_key] = original_key


# ---------------------------------------------------------------------------------------------
# single names
# ---------------------------------------------------------------------------------------------
def first_stage_key(name: str, num_levels: int) -> str:
    """The original name of a disdiff ``VQModel``/``AutoencoderKL`` state-dict key.

    ``num_levels`` is ``len(ddconfig.ch_mult)``; decoder level ``i`` is stored as ``L − 1 − i``.
    """
    parts = name.split(".")
    if len(parts) > 3 and parts[0] == "encoder" and parts[1] == "down" and parts[3] == "resample":
        parts[3] = "downsample"
    elif len(parts) > 3 and parts[0] == "decoder" and parts[1] == "up":
        level = int(parts[2])
        if not 0 <= level < num_levels:
            raise ValueError(f"decoder level {level} of {name!r} is outside 0..{num_levels - 1}")
        parts[2] = str(num_levels - 1 - level)
        if parts[3] == "resample":
            parts[3] = "upsample"
    return ".".join(parts)


def unet_key(name: str) -> str:
    """The original name of a UNet (or stage-3 shift-decoder / embedding) key: ``model.diffusion_model.<name>``."""
    return UNET_PREFIX + name


def ema_key(name: str) -> str:
    """The original EMA shadow of parameter ``diffusion_model.<name>``: ``model_ema.`` + that name without dots."""
    return EMA_PREFIX + ("diffusion_model." + name).replace(".", "")


def image_encoder_key(name: str) -> str:
    """The original name of a disdiff ``ImageEncoder`` key (``features.<i>.…`` or ``fc.…``)."""
    parts = name.split(".")
    if parts[0] == "fc":
        return IMAGE_ENCODER_PREFIX + ".".join([str(IMAGE_ENCODER_FC_INDEX), *parts[1:]])
    if parts[0] != "features" or len(parts) < 3:
        raise ValueError(f"not an image-encoder key: {name!r}")
    rest = parts[2:]
    if rest[0] in IMAGE_ENCODER_RESBLOCK:
        rest = ["convs", IMAGE_ENCODER_RESBLOCK[rest[0]], *rest[1:]]
    return IMAGE_ENCODER_PREFIX + ".".join([parts[1], *rest])


# ---------------------------------------------------------------------------------------------
# whole modules
# ---------------------------------------------------------------------------------------------
def _under(keys: Iterable[str], prefix: str) -> list[str]:
    return [k[len(prefix):] for k in keys if k.startswith(prefix)]


def _add_first_stage(plan: KeyPlan, keys: Iterable[str], prefix: str, original_prefix: str, num_levels: int) -> None:
    for name in _under(keys, prefix):
        plan.add(prefix + name, original_prefix + first_stage_key(name, num_levels))


def _add_ema(plan: KeyPlan, ema_params: Mapping[str, str]) -> None:
    """``ema_params``: parameter name (relative to the averaged network) → disdiff shadow key (``ema.…``)."""
    for name, shadow in ema_params.items():
        plan.add(shadow, ema_key(name))
    if ema_params:
        plan.add("ema.decay", EMA_PREFIX + "decay")
        plan.add("ema.num_updates", EMA_PREFIX + "num_updates")


def _add_schedule(plan: KeyPlan, keys: Iterable[str]) -> None:
    present = set(_under(keys, "schedule."))
    for name in ORIGINAL_SCHEDULE_BUFFERS:
        if name in present:
            plan.compare["schedule." + name] = name


def plan_autoencoder(keys: Iterable[str], num_levels: int) -> KeyPlan:
    """Stage 1: disdiff ``AutoencoderModule`` keys (``autoencoder.*``, ``loss.*``) from an original ``VQModel``/``AutoencoderKL``.

    The autoencoder is required. The loss module's discriminator (and the KL loss's ``logvar``)
    is an optional group: its names are disdiff's (``loss.discriminator.main.<i>``, the PatchGAN
    of spec 2.2); the original's ``loss.*`` entries are accepted whether or not they match.
    """
    keys = list(keys)
    plan = KeyPlan(accepted_prefixes=("loss.",))
    _add_first_stage(plan, keys, "autoencoder.", "", num_levels)
    discriminator = {k: k for k in keys if k.startswith("loss.discriminator.") or k == "loss.logvar"}
    if discriminator:
        plan.optional["discriminator (loss.discriminator.*, loss.logvar)"] = discriminator
    return plan


def plan_ldm(keys: Iterable[str], ema_params: Mapping[str, str], num_levels: int) -> KeyPlan:
    """Stage 2: disdiff ``LatentDiffusionModule`` keys from an original (unconditional) ``LatentDiffusion``."""
    keys = list(keys)
    plan = KeyPlan(accepted_keys=ORIGINAL_UNUSED_KEYS)
    for name in _under(keys, "unet."):
        plan.add("unet." + name, unet_key(name))
    _add_ema(plan, ema_params)
    _add_first_stage(plan, keys, "first_stage.", FIRST_STAGE_PREFIX, num_levels)
    plan.add("scale_factor", "scale_factor")
    _add_schedule(plan, keys)
    return plan


def plan_disdiff(keys: Iterable[str], ema_params: Mapping[str, str], num_levels: int) -> KeyPlan:
    """Stage 3: disdiff ``DisDiffModule`` keys from an original DisDiff ``LatentDiffusion``.

    ``denoiser.unet.*`` (frozen UNet) and ``denoiser.<trained part>`` both sit under
    ``model.diffusion_model.``; ``encoder.*`` is ``cond_stage_model.encoder.*``. The shift UNet's
    own copy of the scale factor (``model.diffusion_model.scale_factor``), if present, must agree
    with the top-level ``scale_factor``.
    """
    keys = list(keys)
    plan = KeyPlan(accepted_keys=ORIGINAL_UNUSED_KEYS)
    for name in _under(keys, "denoiser."):
        original_name = name[len("unet."):] if name.startswith("unet.") else name
        plan.add("denoiser." + name, unet_key(original_name))
    _add_ema(plan, ema_params)
    for name in _under(keys, "encoder."):
        plan.add("encoder." + name, image_encoder_key(name))
    _add_first_stage(plan, keys, "first_stage.", FIRST_STAGE_PREFIX, num_levels)
    plan.add("scale_factor", "scale_factor")
    plan.compare["scale_factor"] = unet_key("scale_factor")
    _add_schedule(plan, keys)
    return plan


# ---------------------------------------------------------------------------------------------
# matching a checkpoint
# ---------------------------------------------------------------------------------------------
MAX_LISTED = 30


def _listing(title: str, items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = f" … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"  {title} ({len(items)}): " + ", ".join(shown) + more


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if torch.is_tensor(value) else f"a {type(value).__name__}, not a tensor"


def _agrees(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    if tuple(ours.shape) != tuple(theirs.shape):
        return False
    return bool(torch.allclose(theirs.double(), ours.double(), rtol=1e-4, atol=1e-6))


def apply_plan(
    plan: KeyPlan, original: Mapping[str, object], target: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fill ``target`` (a disdiff state dict) from ``original`` following ``plan``.

    Returns ``(state dict, notes)``. Keys of ``target`` that the plan does not load keep their
    values (schedule buffers, optional groups absent from the checkpoint). Raises one
    :class:`ConfigError` naming ``source`` and listing every missing, unexpected and mis-shaped
    key and every disagreeing value.
    """
    missing: list[str] = []
    misshaped: list[str] = []
    disagree: list[str] = []
    notes: list[str] = []
    used: set[str] = set()
    state = dict(target)

    def fits(disdiff_key: str, original_key: str) -> bool:
        value = original[original_key]
        want = target[disdiff_key]
        return torch.is_tensor(value) and tuple(value.shape) == tuple(want.shape)

    for disdiff_key, original_key in plan.load.items():
        if original_key not in original:
            missing.append(original_key)
            continue
        used.add(original_key)
        if not fits(disdiff_key, original_key):
            misshaped.append(f"{original_key}: {_shape(original[original_key])}, expected "
                             f"{tuple(target[disdiff_key].shape)} (disdiff {disdiff_key})")
            continue
        state[disdiff_key] = original[original_key].detach().to(target[disdiff_key].dtype).clone()

    for group, entries in plan.optional.items():
        present = {d: o for d, o in entries.items() if o in original}
        used.update(present.values())
        if len(present) == len(entries) and all(fits(d, o) for d, o in present.items()):
            for d, o in entries.items():
                state[d] = original[o].detach().to(target[d].dtype).clone()
            notes.append(f"{group}: imported")
        else:
            notes.append(f"{group}: not imported (the checkpoint holds {len(present)} of its {len(entries)} keys "
                         "with disdiff's names and shapes); disdiff's fresh initialisation is used")

    for disdiff_key, original_key in plan.compare.items():
        if original_key not in original:
            continue
        used.add(original_key)
        value = original[original_key]
        ours = state[disdiff_key]
        if not torch.is_tensor(value) or not _agrees(ours, value):
            if torch.is_tensor(value) and tuple(value.shape) == tuple(ours.shape):
                diff = float((value.double() - ours.double()).abs().max())
                disagree.append(f"{original_key} (max |difference| {diff:.3g} from the value disdiff uses for {disdiff_key})")
            else:
                disagree.append(f"{original_key}: {_shape(value)}, expected {tuple(ours.shape)} like disdiff {disdiff_key}")

    unexpected = sorted(
        k for k in original
        if k not in used and k not in plan.accepted_keys and not k.startswith(plan.accepted_prefixes or ("\0",))
    )
    if missing or unexpected or misshaped or disagree:
        lines = [f"checkpoint {source} does not match the model its config describes:"]
        if missing:
            lines.append(_listing("missing keys", sorted(missing)))
        if unexpected:
            lines.append(_listing("unexpected keys", unexpected))
        if misshaped:
            lines.append(_listing("mis-shaped keys", misshaped))
        if disagree:
            lines.append(_listing("values that disagree with the config", disagree))
        lines.append("nothing was written")
        raise ConfigError("\n".join(lines))
    return state, notes
