"""What the Lightning modules take from a batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def images_from_batch(batch: Any, key: str = "image") -> torch.Tensor:
    """The image tensor (B, C, H, W) in [-1, 1] of a batch: ``batch[key]`` of a dict, the first item of a
    tuple/list, or the tensor itself; float32 and contiguous."""
    if isinstance(batch, Mapping):
        x = batch[key]
    elif isinstance(batch, (list, tuple)):
        x = batch[0]
    else:
        x = batch
    return x.to(memory_format=torch.contiguous_format).float()
