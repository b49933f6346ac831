"""``disdiff quickstart --set STAGE:KEY=VALUE``: a config value for one stage of a quickstart run.

A researcher tries a regime through the quickstart (its budget, curve and report) without
copying configs: ``--set disdiff:model.params.train_reencoder_until=4000`` merges that dotlist
item into stage 3's config after the small model config and the quickstart's run block. Every
value is checked before anything is written or trained: the stage must be one this run trains,
the key must exist where the train command reads it (``lightning``, ``data``, ``model``) or be a
parameter of the stage's model class, the value must have that parameter's type, and stage 3's
opt-in deviations must be consistent (:class:`disdiff.training.deviations.Deviations`). Keys
the quickstart sets itself (:data:`OWNED_KEYS`) are refused, naming the option that sets them.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from disdiff.config import ConfigError, check_target_params, load_configs
from disdiff.pipeline.settings import STAGE_CONFIGS, STAGES


#: Keys the quickstart sets itself after merging (``Quickstart.stage_config``), and what sets them:
#: a ``--set`` value there would be overwritten silently, so it is refused.
OWNED_KEYS = {
    "data.params.dataset": "--dataset", "data.params.dataset_options": "--dataset, --resolution and --factor-sizes",
    "data.params.val_size": "the quickstart (from the dataset's size)", "data.params.data_dir": "--data-dir",
    "model.params.num_units": "--units", "model.params.encoder_config.resolution": "--resolution",
    "model.params.ldm_ckpt": "the quickstart (the packaged or this run's stage 2)",
    "model.params.autoencoder_config.params.ddconfig.resolution": "--resolution",
    "model.params.first_stage_config": "the quickstart (this run's stage 1)",
    "model.params.first_stage_ckpt": "the quickstart (this run's stage 1)",
    "model.params.unet_config.params.image_size": "the quickstart (stage 1's latent size)",
}


def parse_set(text: str) -> tuple[str, str]:
    """``"disdiff:model.params.x=1"`` -> ``("disdiff", "model.params.x=1")``; ValueError says what is wrong."""
    stage, sep, item = text.partition(":")
    if not sep or stage not in STAGES:
        raise ValueError(f"--set {text!r}: expected STAGE:KEY=VALUE with STAGE one of {', '.join(STAGES)}")
    key, eq, _ = item.partition("=")
    if not eq or not key.strip() or " " in key.strip():
        raise ValueError(f"--set {text!r}: expected STAGE:KEY=VALUE, e.g. disdiff:model.params.dis_weight=0.1")
    for owned, option in OWNED_KEYS.items():
        if key == owned or key.startswith(owned + ".") or owned.startswith(key + "."):
            raise ValueError(f"--set {text!r}: {owned} is set by {option}, not by --set")
    return stage, item


def group_sets(items: list[str]) -> dict[str, list[str]]:
    """The ``--set`` values as each stage's dotlist, in the order given (a later value wins)."""
    grouped: dict[str, list[str]] = {}
    for text in items:
        stage, item = parse_set(text)
        grouped.setdefault(stage, []).append(item)
    return grouped


def check_sets(items: list[str], trained: tuple[str, ...]) -> None:
    """Parse and check ``--set`` values against the stages this run trains; ConfigError names the value."""
    from disdiff.training.deviations import Deviations
    from disdiff.training.run_config import validate_config

    try:
        grouped = group_sets(items)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for stage, dotlist in grouped.items():
        if stage not in trained:
            raise ConfigError(f"--set {stage}:...: this run does not train the {stage} stage (it starts from the "
                              f"packaged checkpoints; add --from-scratch to train every stage)")
        try:
            config = load_configs(STAGE_CONFIGS[stage], dotlist)
        except Exception as exc:  # OmegaConf's grammar errors come in several types
            raise ConfigError(f"--set {stage}:{' '.join(dotlist)}: not a valid KEY=VALUE item ({exc})") from exc
        where = f"--set {stage}:{', '.join(dotlist)}"
        try:
            validate_config(config)
            check_target_params(config.model)
            if "data" in config:
                check_target_params(config.data)
            if stage == "disdiff":
                Deviations.from_params(OmegaConf.to_container(config.model.params, resolve=False))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
