"""Optional LPIPS perceptual loss (spec section 2.5), loaded only from user-supplied files.

Nothing is ever downloaded. The VGG16 feature stack is written here in plain torch with the same
layer indices as torchvision's ``vgg16().features`` (so an ImageNet VGG16 state dict with keys
``features.<i>.weight`` loads), and the linear heads use the key layout of the LPIPS v0.1
``vgg.pth`` file (``lin<k>.model.1.weight``).

Without a heads file the perceptual term is disabled, with a single warning per process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from disdiff.config import ConfigError

logger = logging.getLogger(__name__)

_WARNED_DISABLED = False

# (out_channels per conv, "M" = max-pool), the VGG16 "D" configuration up to conv5_3.
_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# features[a:b] slices ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
CHANNELS = (64, 128, 256, 512, 512)


def _frozen_train(self: nn.Module, mode: bool = True) -> nn.Module:
    return self


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk, ``features`` indices 0..29, returning the five relu_x outputs."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        assert len(self.features) == 30

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        h = x
        for start, stop in _SLICES:
            for i in range(start, stop):
                h = self.features[i](h)
            outs.append(h)
        return outs


class LinearHead(nn.Module):
    """1x1 conv C -> 1 without bias; ``model.0`` is a (never active) dropout slot kept for key layout."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.0), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _load_state(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} not found (LPIPS weights are never downloaded; pass a local file)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot read {what} file {str(p)!r}: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} file {str(p)!r} does not hold a state dict")
    return obj


def _vgg_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision (``features.i.*``) or LPIPS-module (``net.sliceK.i.*``) keys to ``features.i.*``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and len(parts) == 3:
            out[key] = value
        elif parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
            out[f"features.{parts[2]}.{parts[3]}"] = value
    return out


class LPIPS(nn.Module):
    """Learned perceptual distance; returns one value per sample, shape (B, 1, 1, 1).

    ``lpips_weights``: file with the five linear heads (``lin0..lin4``); it may also contain the VGG
    trunk (``net.sliceK.*`` keys of a full LPIPS module). ``vgg_weights``: an ImageNet VGG16 state
    dict (torchvision layout); needed unless ``lpips_weights`` contains the trunk.
    All parameters are frozen and the module stays in eval mode.
    """

    def __init__(self, lpips_weights: str | Path, vgg_weights: str | Path | None = None):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.net = VGG16Features()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (LinearHead(c) for c in CHANNELS)

        heads_state = _load_state(lpips_weights, "LPIPS linear-head weights")
        heads = {k: v for k, v in heads_state.items() if k.startswith("lin")}
        expected_heads = {f"lin{i}.model.1.weight" for i in range(5)}
        if set(heads) != expected_heads:
            raise ConfigError(
                f"LPIPS weights file {str(lpips_weights)!r} must hold keys {sorted(expected_heads)}, "
                f"found {sorted(heads)[:10]}"
            )
        vgg_state = _vgg_keys(_load_state(vgg_weights, "VGG16 weights")) if vgg_weights else _vgg_keys(heads_state)
        if not vgg_state:
            raise ConfigError(
                f"no VGG16 trunk weights: {str(lpips_weights)!r} holds only the linear heads, pass vgg_weights "
                "(an ImageNet VGG16 state dict with keys features.<i>.weight/bias)"
            )
        self._load_part(self.net, vgg_state, vgg_weights or lpips_weights)
        self._load_part(self, heads, lpips_weights, prefix_filter="lin")

        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        self.train = _frozen_train.__get__(self)  # stays frozen when a parent calls .train()

    @staticmethod
    def _load_part(module: nn.Module, state: dict[str, torch.Tensor], path, prefix_filter: str | None = None) -> None:
        own = {k: v for k, v in module.state_dict().items() if prefix_filter is None or k.startswith(prefix_filter)}
        missing = sorted(set(own) - set(state))
        if missing:
            raise ConfigError(f"weights file {str(path)!r} lacks keys {missing[:6]}")
        for key, value in own.items():
            if tuple(state[key].shape) != tuple(value.shape):
                raise ConfigError(
                    f"weights file {str(path)!r}: key {key!r} has shape {tuple(state[key].shape)}, "
                    f"expected {tuple(value.shape)}"
                )
        module.load_state_dict({k: state[k] for k in own}, strict=prefix_filter is None)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        heads = (self.lin0, self.lin1, self.lin2, self.lin3, self.lin4)
        total = 0.0
        for a, b, head in zip(fx, fy, heads):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + head((a - b) ** 2).mean(dim=[2, 3], keepdim=True)
        return total


def build_perceptual_loss(lpips_weights: str | Path | None, vgg_weights: str | Path | None = None) -> LPIPS | None:
    """An LPIPS module, or None (perceptual term disabled; warns once per process) without a file."""
    global _WARNED_DISABLED
    if not lpips_weights:
        if vgg_weights:
            raise ConfigError("vgg_weights was given without lpips_weights; the LPIPS linear heads are needed too")
        if not _WARNED_DISABLED:
            logger.warning(
                "LPIPS perceptual loss disabled: no lpips_weights file given (weights are never downloaded); "
                "the stage-1 reconstruction loss is L1 only"
            )
            _WARNED_DISABLED = True
        return None
    return LPIPS(lpips_weights, vgg_weights)
