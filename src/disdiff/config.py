"""OmegaConf configs made of ``target`` / ``params`` blocks, as in latent-diffusion.

A block ``{target: "package.module.Class", params: {...}}`` names a callable by its import
path and the keyword arguments it is called with.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

PACKAGED_CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration file or value is missing, malformed or inconsistent."""


def plain(value: Any) -> Any:
    """``value`` with every OmegaConf node turned into plain dicts and lists, recursively
    (interpolations resolved): what checkpoints store as hyper-parameters and ``==`` compares."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def get_obj_from_str(path: str) -> Any:
    """Import ``"package.module.Name"`` and return ``Name``."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"target {path!r} is not a dotted import path such as 'disdiff.models.unet.UNetModel'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"target {path!r}: cannot import module {module_name!r} ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"target {path!r}: module {module_name!r} has no attribute {attr!r}") from exc


def instantiate_from_config(config: Mapping[str, Any] | DictConfig, **extra: Any) -> Any:
    """Build the object a ``target``/``params`` block describes.

    ``extra`` keyword arguments are added to (and override) ``params``.
    """
    cls, params = check_target_params(config, resolve=True)
    try:
        return cls(**params, **extra)
    except TypeError as exc:
        raise ConfigError(f"cannot build {config['target']} from params {sorted(params)}: {exc}") from exc


def check_target_params(config: Mapping[str, Any] | DictConfig, resolve: bool = False) -> tuple[Any, dict[str, Any]]:
    """The checks made before building a ``target``/``params`` block, without building it: unknown
    parameter names and wrong plain types (OmegaConf's missing ``???`` passes). Returns the target
    class and the params as a plain dict."""
    if not isinstance(config, (Mapping, DictConfig)) or "target" not in config:
        raise ConfigError(f"expected a config block with a 'target' key, got {config!r}")
    params = config.get("params", None) or {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=resolve)
    cls = get_obj_from_str(str(config["target"]))
    _check_params(cls, dict(params), str(config["target"]))
    check_param_types(cls, dict(params), str(config["target"]))
    return cls, dict(params)


def _check_params(cls: Any, params: dict[str, Any], target: str) -> None:
    """Name unknown keys and the valid ones, instead of a bare TypeError from deep inside."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    accepted = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = sorted(name for name, p in accepted.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        raise ConfigError(f"unknown parameter(s) {unknown} for {target}; valid parameters: {valid}")


_SCALARS = (bool, int, float, str, dict, list)


def _simple_types(hint: Any) -> tuple[type, ...] | None:
    """The plain types an annotation allows (``int``, ``float | None``, ``dict[str, Any]``, ...), else None."""
    if hint is type(None):
        return (type(None),)
    if hint in _SCALARS:
        return (hint,)
    origin = typing.get_origin(hint)
    if origin in (dict, list):
        return (origin,)
    if origin in (typing.Union, types.UnionType):
        allowed: tuple[type, ...] = ()
        for arg in typing.get_args(hint):
            sub = _simple_types(arg)
            if sub is None:
                return None
            allowed += sub
        return allowed
    return None


def _value_matches(value: Any, allowed: tuple[type, ...]) -> bool:
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed
    if isinstance(value, str):
        return str in allowed
    if isinstance(value, Mapping):
        return dict in allowed
    if isinstance(value, (list, tuple)):
        return list in allowed
    return True  # other objects (passed from Python, not YAML) are not checked


def check_param_types(cls: Any, params: dict[str, Any], target: str) -> None:
    """Name a parameter whose value has the wrong type for its plain annotation (int, float, str, bool, ...)."""
    try:
        hints = typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls)
    except Exception:  # builtins, unresolvable annotations: not checked
        return
    for name, value in params.items():
        if isinstance(value, str) and value == "???":
            continue  # OmegaConf's "missing": the target says what it needs there
        allowed = _simple_types(hints[name]) if name in hints else None
        if allowed is not None and not _value_matches(value, allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"parameter {name!r} of {target} must be {names}, got {type(value).__name__} {value!r}")


def resolve_config_path(path: str | Path) -> Path:
    """Find a config file: as given, else relative to the configs shipped with the package."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    packaged = PACKAGED_CONFIG_DIR / candidate
    if packaged.is_file():
        return packaged
    raise ConfigError(
        f"config file {str(path)!r} not found (looked in the working directory and in {PACKAGED_CONFIG_DIR})"
    )


def load_configs(paths: list[str | Path], dotlist: list[str] | None = None) -> DictConfig:
    """Load YAML files, merge them left to right, then apply ``key.sub=value`` overrides."""
    configs = []
    for path in paths:
        resolved = resolve_config_path(path)
        try:
            configs.append(OmegaConf.load(resolved))
        except Exception as exc:  # yaml errors come in several types
            raise ConfigError(f"cannot parse config file {resolved}: {exc}") from exc
    merged = OmegaConf.merge(*configs) if configs else OmegaConf.create()
    if dotlist:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(dotlist)))
    return merged
