"""The built-in shapes3d-synth renderer: determinism, factor independence and visibility, caching."""

from __future__ import annotations

import numpy as np
import pytest

from disdiff.data.base import DatasetError
from disdiff.data.registry import load_dataset
from disdiff.data.synth import Shapes3DSynth

SMALL = (3, 3, 3, 3, 4, 3)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small32():
    return Shapes3DSynth(factor_sizes=SMALL, resolution=32, storage="memory")


@pytest.fixture(scope="module")
def full32():
    return Shapes3DSynth(resolution=32, storage="lazy")


def test_interface_and_ranges(small32):
    assert small32.factor_names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert small32.num_images == int(np.prod(SMALL)) and len(small32) == small32.num_images
    assert small32.image_shape == (32, 32, 3)
    images = small32.images([0, 5, small32.num_images - 1])
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    image, factors = small32[7]
    assert tuple(image.shape) == (3, 32, 32) and factors.tolist() == small32.factors_of(7).tolist()
    idx = np.arange(small32.num_images)
    assert np.array_equal(small32.index_of(small32.factors_of(idx)), idx)


def test_default_grid_is_shapes3d():
    d = load_dataset("shapes3d-synth", storage="lazy")
    assert d.factor_sizes == (10, 10, 10, 8, 4, 15) and d.num_images == 480_000 and d.image_shape == (64, 64, 3)


def test_deterministic_and_storage_modes_agree(small32, tmp_path):
    again = Shapes3DSynth(factor_sizes=SMALL, resolution=32, storage="memory").images_uint8(np.arange(small32.num_images))
    assert np.array_equal(again, small32.images_uint8(np.arange(small32.num_images)))
    lazy = Shapes3DSynth(factor_sizes=SMALL, resolution=32, storage="lazy")
    pick = np.array([17, 3, 3, 200, 0, small32.num_images - 1])
    assert np.array_equal(lazy.images_uint8(pick), small32.images_uint8(pick))


def test_disk_cache_written_once_and_reused(tmp_path, small32):
    first = Shapes3DSynth(factor_sizes=SMALL, resolution=32, storage="disk", cache_dir=tmp_path / "c")
    assert not first.cache_path.exists()
    first.prepare()
    assert first.cache_path.exists() and first.cache_path.parent == tmp_path / "c"
    assert not [p for p in first.cache_path.parent.iterdir() if ".tmp" in p.name]  # atomic: no leftovers
    stamp = first.cache_path.stat().st_mtime_ns
    second = Shapes3DSynth(factor_sizes=SMALL, resolution=32, storage="disk", cache_dir=tmp_path / "c")
    second._geometry = "must not be needed"  # a reused cache does not render
    images = second.images_uint8(np.arange(10))
    assert isinstance(second._images, np.memmap)
    assert first.cache_path.stat().st_mtime_ns == stamp
    assert np.array_equal(images, small32.images_uint8(np.arange(10)))
    other = Shapes3DSynth(factor_sizes=SMALL, resolution=16, storage="disk", cache_dir=tmp_path / "c")
    assert other.cache_path != first.cache_path


def test_default_cache_location_uses_env(tmp_path):
    d = Shapes3DSynth(factor_sizes=SMALL, resolution=16)
    assert str(d.cache_path).startswith(str(tmp_path / "cache" / "shapes3d-synth"))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=-1)


@pytest.mark.parametrize("base", [(0, 1, 2, 0, 0, 0), (2, 0, 1, 2, 1, 2), (1, 2, 0, 1, 2, 1), (0, 0, 2, 2, 3, 0)])
def test_factor_independence(small32, base):
    base = np.array(base)
    image = small32.images_uint8([small32.index_of(base)])[0]
    masks = small32.part_masks(base)
    assert masks["floor"].any() and masks["wall"].any() and masks["object"].any()
    for k, part in ((0, "floor"), (1, "wall"), (2, "object")):
        other = base.copy()
        other[k] = (other[k] + 1) % SMALL[k]
        changed = _changed(image, small32.images_uint8([small32.index_of(other)])[0])
        assert changed.any(), f"changing {small32.factor_names[k]} changed nothing"
        assert not np.any(changed & ~masks[part]), f"{small32.factor_names[k]} changed pixels outside the {part}"
    # explicitly: wall hue never touches floor pixels, floor hue never wall pixels
    wall_change, floor_change = base.copy(), base.copy()
    wall_change[1] = (base[1] + 1) % SMALL[1]
    floor_change[0] = (base[0] + 1) % SMALL[0]
    assert not np.any(_changed(image, small32.images_uint8([small32.index_of(wall_change)])[0]) & masks["floor"])
    assert not np.any(_changed(image, small32.images_uint8([small32.index_of(floor_change)])[0]) & masks["wall"])
    # geometry factors change some object pixels
    for k in (3, 4, 5):
        other = base.copy()
        other[k] = (other[k] + 1) % SMALL[k]
        changed = _changed(image, small32.images_uint8([small32.index_of(other)])[0])
        assert np.any(changed & masks["object"]), f"{small32.factor_names[k]} did not change the object"


def test_every_factor_value_visible_at_32(full32):
    rng = np.random.RandomState(0)
    for _ in range(2):
        base = full32.sample_factors(1, rng)[0]
        for k, size in enumerate(full32.factor_sizes):
            sweep = np.repeat(base[None], size, axis=0)
            sweep[:, k] = np.arange(size)
            images = full32.images_uint8(full32.index_of(sweep)).reshape(size, -1).astype(np.int16)
            for i in range(size):
                for j in range(i + 1, size):
                    assert np.any(images[i] != images[j]), f"{full32.factor_names[k]} values {i} and {j} look identical"


def test_small_resolution_and_reduced_shapes():
    d = Shapes3DSynth(factor_sizes=(2, 2, 2, 2, 2, 2), resolution=16, storage="memory")
    images = d.images_uint8(np.arange(d.num_images))
    assert images.shape == (64, 16, 16, 3)
    assert len({im.tobytes() for im in images}) == 64


def test_bad_options():
    with pytest.raises(DatasetError, match="shape"):
        Shapes3DSynth(factor_sizes=(2, 2, 2, 2, 5, 2))
    with pytest.raises(DatasetError, match="factor_sizes"):
        Shapes3DSynth(factor_sizes=(2, 2, 2))
    with pytest.raises(DatasetError, match="storage"):
        Shapes3DSynth(storage="cloud")
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("shapes3d-synth", colour="red")
