"""Preview images of a dataset: one row per factor, that factor swept with the others fixed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from disdiff.data.base import GroundTruthDataset, as_rng
from disdiff.utils.io import atomic_save_with

if TYPE_CHECKING:
    from PIL import Image

MAX_COLUMNS = 15


def sweep_values(size: int, max_columns: int = MAX_COLUMNS) -> np.ndarray:
    """All values of a factor, or ``max_columns`` evenly spaced ones (first and last included)."""
    if size <= max_columns:
        return np.arange(size)
    return np.unique(np.round(np.linspace(0, size - 1, max_columns)).astype(np.int64))


def factor_sweeps(dataset: GroundTruthDataset, seed: int = 0, max_columns: int = MAX_COLUMNS
                  ) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """(base factors (K,), per factor the list of uint8 images of its sweep)."""
    base = dataset.sample_factors(1, as_rng(seed))[0]
    rows = []
    for k, size in enumerate(dataset.factor_sizes):
        values = sweep_values(size, max_columns)
        factors = np.repeat(base[None], len(values), axis=0)
        factors[:, k] = values
        rows.append(list(dataset.images_uint8(dataset.index_of(factors))))
    return base, rows


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def compose_grid(rows: list[list[np.ndarray]], labels: list[str], title: str, tile: int) -> "Image.Image":
    from PIL import Image, ImageDraw

    font = _font(max(11, tile // 5))
    title_font = _font(max(12, tile // 4))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max([int(probe.textlength(label, font=font)) for label in labels] + [40]) + 16
    columns = max(len(r) for r in rows)
    header = int(tile * 0.45) + 8
    gap = 2
    width = label_width + columns * (tile + gap)
    height = header + len(rows) * (tile + gap)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 4), title, fill=(0, 0, 0), font=title_font)
    for r, (label, images) in enumerate(zip(labels, rows)):
        y = header + r * (tile + gap)
        draw.text((8, y + tile // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
        for c, image in enumerate(images):
            if image.shape[-1] == 1:
                image = np.repeat(image, 3, axis=-1)
            tile_image = Image.fromarray(np.ascontiguousarray(image))
            if tile_image.size != (tile, tile):
                tile_image = tile_image.resize((tile, tile), Image.NEAREST)
            canvas.paste(tile_image, (label_width + c * (tile + gap), y))
    return canvas


def render_preview(dataset: GroundTruthDataset, seed: int = 0, name: str | None = None, tile: int | None = None):
    """A PIL image: one row per factor (or a grid of random images for a non-grid dataset)."""
    height = dataset.image_shape[0]
    tile = tile or max(64, height)
    name = name or dataset.describe().get("name", type(dataset).__name__)
    if not dataset.is_factor_grid:
        rng = as_rng(seed)
        count = min(64, dataset.num_images)
        indices = np.sort(rng.choice(dataset.num_images, size=count, replace=False))
        images = list(dataset.images_uint8(indices))
        per_row = 8
        rows = [images[i:i + per_row] for i in range(0, len(images), per_row)]
        labels = [f"#{indices[i]}" for i in range(0, len(images), per_row)]
        return compose_grid(rows, labels, f"{name}: {count} random images of {dataset.num_images} (seed {seed})", tile)
    base, rows = factor_sweeps(dataset, seed)
    labels = [f"{n} ({s})" for n, s in zip(dataset.factor_names, dataset.factor_sizes)]
    title = f"{name}: each row sweeps one factor; others fixed at {base.tolist()}"
    return compose_grid(rows, labels, title, tile)


def save_preview(dataset: GroundTruthDataset, out: str | Path, seed: int = 0, name: str | None = None) -> Path:
    image = render_preview(dataset, seed=seed, name=name)
    out = Path(out)
    atomic_save_with(out, lambda tmp: image.save(tmp, format="PNG"))
    return out
