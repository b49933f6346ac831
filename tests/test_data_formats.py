"""Real-format loaders, read through the public interface from tiny files written in each format."""

from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest

from disdiff.data import npz
from disdiff.data.base import DatasetError
from disdiff.data.cars3d import load_cars3d
from disdiff.data.celeba import AttributeDataset
from disdiff.data.mpi3d import detect_variant
from disdiff.data.registry import load_dataset
from disdiff.data.shapes3d import load_shapes3d

SHAPES_SIZES = (2, 2, 1, 2, 2, 3)  # 48 images, all six factors present


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISDIFF_DATA", raising=False)


def grid(sizes):
    sizes = np.asarray(sizes)
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1).astype(np.int64)


def coded_images(factors, height=64, channels=3):
    """Distinguishable images: factor k is written (as 10*value + 7) into pixel row 0, column k."""
    n = len(factors)
    images = np.zeros((n, height, height, channels), dtype=np.uint8)
    images[:, 0, : factors.shape[1], :] = (factors * 10 + 7)[:, :, None]
    images[:, 1:, :, :] = (np.arange(n) % 251)[:, None, None, None]
    return images


def decode(images_uint8, k):
    return (images_uint8[:, 0, :k, 0].astype(np.int64) - 7) // 10


def check_grid_dataset(d, sizes, stored_factors=None):
    assert d.factor_sizes == tuple(sizes)
    idx = np.arange(d.num_images)
    assert np.array_equal(d.index_of(d.factors_of(idx)), idx)
    # the image at index_of(f) is the one written for f
    rng = np.random.RandomState(0)
    pick = rng.choice(d.num_images, size=min(20, d.num_images), replace=False)
    got = d.images_uint8(pick)
    assert np.array_equal(decode(got, len(sizes)), d.factors_of(pick))
    floats = d.images(pick)
    assert floats.dtype == np.float32 and floats.shape == (len(pick),) + (d.image_shape[2], d.image_shape[0], d.image_shape[1])
    assert floats.min() >= -1.0 and floats.max() <= 1.0
    image, factors = d[int(pick[0])]
    assert image.shape == floats.shape[1:] and factors.tolist() == d.factors_of(int(pick[0])).tolist()


# ------------------------------------------------------------------------------------ Shapes3D
def shapes_labels(factors):
    hue = factors[:, :3] / 10.0
    scale = 0.75 + factors[:, 3:4] * 0.5 / 7
    orientation = -30.0 + factors[:, 5:6] * 60.0 / 14
    return np.concatenate([hue, scale, factors[:, 4:5].astype(float), orientation], axis=1)


def write_shapes_h5(path, sizes=SHAPES_SIZES, permute=False):
    factors = grid(sizes)
    order = np.random.RandomState(1).permutation(len(factors)) if permute else np.arange(len(factors))
    with h5py.File(path, "w") as f:
        f["images"] = coded_images(factors)[order]
        f["labels"] = shapes_labels(factors)[order]
    return path


def test_shapes3d_h5(tmp_path):
    path = write_shapes_h5(tmp_path / "3dshapes.h5")
    d = load_dataset("shapes3d", data_dir=tmp_path, factor_sizes=SHAPES_SIZES)
    assert d.image_shape == (64, 64, 3) and str(path) in d.source
    check_grid_dataset(d, SHAPES_SIZES)
    assert d.describe()["labels"].startswith("checked")


def test_shapes3d_h5_rows_in_other_order_are_reordered(tmp_path):
    write_shapes_h5(tmp_path / "3dshapes.h5", permute=True)
    d = load_dataset(tmp_path / "3dshapes.h5", factor_sizes=SHAPES_SIZES)
    check_grid_dataset(d, SHAPES_SIZES)
    assert "reordered" in d.describe()["labels"]


def test_shapes3d_npz_is_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_DATA", str(tmp_path))
    (tmp_path / "shapes3d").mkdir()
    np.savez(tmp_path / "shapes3d" / "3dshapes.npz", images=coded_images(grid(SHAPES_SIZES)))
    d = load_dataset("shapes3d", factor_sizes=SHAPES_SIZES)
    assert isinstance(d.storage, np.memmap)
    check_grid_dataset(d, SHAPES_SIZES)


def test_shapes3d_wrong_count_is_a_clear_error(tmp_path):
    write_shapes_h5(tmp_path / "3dshapes.h5")
    with pytest.raises(DatasetError) as err:
        load_dataset("shapes3d", data_dir=tmp_path)  # default: the full 480,000 grid
    message = str(err.value)
    assert "3dshapes.h5" in message and "'images'" in message and "(48, 64, 64, 3)" in message
    assert "(480000, 64, 64, 3)" in message and "uint8" in message and "github.com/google-deepmind/3d-shapes" in message


def test_shapes3d_wrong_dtype_and_missing_key(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["images"] = np.zeros((48, 64, 64, 3), np.float32)
    with pytest.raises(DatasetError, match=r"dtype float32.*expected.*uint8"):
        load_shapes3d(tmp_path / "a.h5", factor_sizes=SHAPES_SIZES)
    with h5py.File(tmp_path / "3dshapes.h5", "w") as f:
        f["pictures"] = np.zeros((2, 2), np.uint8)
    with pytest.raises(DatasetError, match=r"no array 'images' \(found: pictures\)"):
        load_dataset(tmp_path / "3dshapes.h5")


def test_missing_dataset_names_places_and_source(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("shapes3d", data_dir=tmp_path)
    assert str(tmp_path) in str(err.value) and "3dshapes.h5" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="DISDIFF_DATA"):
        load_dataset("mpi3d")
    with pytest.raises(DatasetError, match="neither a dataset name"):
        load_dataset(tmp_path / "nope.npz")


def test_truncated_and_corrupt_files(tmp_path):
    np.savez(tmp_path / "3dshapes.npz", images=coded_images(grid(SHAPES_SIZES)))
    data = (tmp_path / "3dshapes.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        load_dataset(tmp_path / "cut.npz")
    write_shapes_h5(tmp_path / "3dshapes.h5")
    data = (tmp_path / "3dshapes.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match="cut.h5"):
        load_dataset(tmp_path / "cut.h5", factor_sizes=SHAPES_SIZES)
    (tmp_path / "junk.npz").write_bytes(b"hello, not an archive")
    with pytest.raises(DatasetError, match="neither an .npz"):
        load_dataset(tmp_path / "junk.npz")


# --------------------------------------------------------------------------------------- MPI3D
MPI_SIZES = (2, 2, 1, 1, 1, 2, 3)


def test_mpi3d_npz(tmp_path):
    folder = tmp_path / "mpi3d"
    folder.mkdir()
    np.savez(folder / "mpi3d_toy.npz", images=coded_images(grid(MPI_SIZES)))
    d = load_dataset("mpi3d", data_dir=tmp_path, factor_sizes=MPI_SIZES)
    assert d.factor_names[0] == "object_color" and d.factor_names[-1] == "vertical_axis"
    assert isinstance(d.storage, np.memmap)
    check_grid_dataset(d, MPI_SIZES)
    assert d.describe()["variant"] == "toy" and "toy" in d.source


def test_mpi3d_default_count_error(tmp_path):
    np.savez(tmp_path / "mpi3d_real.npz", images=coded_images(grid(MPI_SIZES)))
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "mpi3d_real.npz")
    assert "1036800" in str(err.value) and "460800" in str(err.value) and "rr-learning" in str(err.value)


def test_mpi3d_variant_detection():
    assert detect_variant(460_800, "data.npz", None)[0] == "real_complex"
    assert detect_variant(1_036_800, "mpi3d_realistic.npz", None)[0] == "realistic"
    assert detect_variant(1_036_800, "mpi3d_real.npz", None)[0] == "real"
    assert detect_variant(1_036_800, "mpi3d_toy.npz", None)[0] == "toy"
    assert "ambiguous" in detect_variant(1_036_800, "images.npz", None)[0]
    assert detect_variant(1_036_800, "images.npz", "real")[0] == "real"
    with pytest.raises(DatasetError, match="variant"):
        detect_variant(460_800, "mpi3d_toy.npz", None)


# -------------------------------------------------------------------------------------- Cars3D
def write_car(path, obj):
    from scipy.io import savemat

    im = np.zeros((128, 128, 3, 24, 4), dtype=np.uint8)
    im[:, :, 0] = (np.arange(24) * 10)[None, None, :, None]
    im[:, :, 1] = (np.arange(4) * 60)[None, None, None, :]
    im[:, :, 2] = obj * 100
    savemat(str(path), {"im": im})


def test_cars3d_folder(tmp_path):
    folder = tmp_path / "cars"
    folder.mkdir()
    for number, obj in ((7, 1), (3, 0), (11, 2)):  # object id = position in sorted file names
        write_car(folder / f"car_{number:03d}_mesh.mat", obj)
    d = load_dataset("cars3d", data_dir=tmp_path)
    assert d.factor_names == ("elevation", "azimuth", "object") and d.factor_sizes == (4, 24, 3)
    assert d.num_images == 288 and d.image_shape == (64, 64, 3)
    info = d.describe()
    assert info["objects"] == 3 and "183" in info["note"] and "sorted" in info["object_ids"]
    idx = np.arange(d.num_images)
    assert np.array_equal(d.index_of(d.factors_of(idx)), idx)
    # canonical index = elev * 24 * N + azim * N + object
    assert d.index_of([2, 5, 1]) == 2 * 24 * 3 + 5 * 3 + 1
    images = d.images_uint8(idx).astype(int)
    factors = d.factors_of(idx)
    assert np.abs(images[:, 32, 32, 0] - factors[:, 1] * 10).max() <= 1
    assert np.abs(images[:, 32, 32, 1] - factors[:, 0] * 60).max() <= 1
    assert np.abs(images[:, 32, 32, 2] - factors[:, 2] * 100).max() <= 1
    # the resized array is cached and reused
    cache = list((tmp_path / "cache" / "cars3d").glob("*.npy"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again = load_dataset(folder)
    assert isinstance(again.storage, np.memmap) and cache[0].stat().st_mtime_ns == stamp
    assert load_dataset(folder, resolution=32).image_shape == (32, 32, 3)


def test_cars3d_bad_files(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "cars"
    folder.mkdir()
    savemat(str(folder / "car_001_mesh.mat"), {"im": np.zeros((128, 128, 3, 24, 3), np.uint8)})
    with pytest.raises(DatasetError) as err:
        load_dataset(folder)
    assert "car_001_mesh.mat" in str(err.value) and "(128, 128, 3, 24, 3)" in str(err.value) and "24, 4" in str(err.value)
    (folder / "car_001_mesh.mat").write_bytes(b"MATLAB garbage")
    with pytest.raises(DatasetError, match="not a readable MATLAB"):
        load_dataset(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no car_"):
        load_cars3d(empty)


# ------------------------------------------------------------------------------------ dSprites
DSPRITES_SIZES = (2, 2, 3, 2, 2)


def dsprites_arrays(permute=False):
    gt = grid(DSPRITES_SIZES)
    latents = np.concatenate([np.zeros((len(gt), 1), np.int64), gt], axis=1)
    imgs = np.zeros((len(gt), 64, 64), np.uint8)
    for k in range(5):  # factor k value v -> v+1 pixels set in row k
        for v in range(3):
            imgs[gt[:, k] == v, k, : v + 1] = 1
    order = np.random.RandomState(2).permutation(len(gt)) if permute else np.arange(len(gt))
    return imgs[order], latents[order]


@pytest.mark.parametrize("permute", [False, True])
def test_dsprites(tmp_path, permute):
    imgs, latents = dsprites_arrays(permute)
    path = tmp_path / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    path.parent.mkdir()
    np.savez_compressed(path, imgs=imgs, latents_classes=latents, latents_values=latents.astype(float))
    d = load_dataset("dsprites", data_dir=tmp_path, factor_sizes=DSPRITES_SIZES)
    assert d.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert d.image_shape == (64, 64, 3)
    idx = np.arange(d.num_images)
    images = d.images_uint8(idx)
    assert set(np.unique(images)) <= {0, 255}
    assert np.array_equal(images[..., 0], images[..., 2])
    factors = d.factors_of(idx)
    for k in range(5):
        assert np.array_equal((images[:, k, :3, 0] == 255).sum(axis=1), factors[:, k] + 1)
    floats = d.images(idx[:4])
    assert floats.min() == -1.0 and floats.max() == 1.0


def test_dsprites_compressed_member_extracted_to_cache(tmp_path, monkeypatch):
    imgs, latents = dsprites_arrays()
    path = tmp_path / "d.npz"
    np.savez_compressed(path, imgs=imgs, latents_classes=latents)
    monkeypatch.setattr(npz, "SMALL_MEMBER_BYTES", 0)
    d = load_dataset(path, factor_sizes=DSPRITES_SIZES)
    assert isinstance(d.storage, np.memmap)
    assert str(d.storage.filename).startswith(str(tmp_path / "cache" / "extracted"))
    assert np.array_equal(np.asarray(d.storage), imgs)


def test_dsprites_incomplete_grid(tmp_path):
    imgs, latents = dsprites_arrays()
    latents[5] = latents[6]
    np.savez(tmp_path / "d.npz", imgs=imgs, latents_classes=latents)
    with pytest.raises(DatasetError, match=r"not a complete grid: 1 combinations appear more than once .* 1 are missing"):
        load_dataset(tmp_path / "d.npz", factor_sizes=DSPRITES_SIZES)


# -------------------------------------------------------------------------------------- CelebA
def write_celeba(root, count=3, size=(178, 218), names=None):
    from PIL import Image

    (root / "img_align_celeba").mkdir(parents=True)
    names = names or [f"Attr_{k}" for k in range(40)]
    lines = [str(count), " ".join(names)]
    for i in range(count):
        colour = (40 * i + 20, 200 - 50 * i, 90)
        Image.new("RGB", size, colour).save(root / "img_align_celeba" / f"{i + 1:06d}.jpg", quality=95)
        values = ["1" if (k + i) % 3 == 0 else "-1" for k in range(40)]
        lines.append(f"{i + 1:06d}.jpg  " + " ".join(values))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


def test_celeba_folder(tmp_path):
    write_celeba(tmp_path / "celeba")
    d = load_dataset("celeba", data_dir=tmp_path)
    assert isinstance(d, AttributeDataset) and not d.is_factor_grid
    assert d.num_images == 3 and d.image_shape == (64, 64, 3) and len(d.attribute_names) == 40
    assert d.attributes.shape == (3, 40) and set(np.unique(d.attributes)) <= {0, 1}
    assert d.attributes[1, 2] == 1 and d.attributes[1, 0] == 0
    images = d.images_uint8([0, 1, 2]).astype(int)
    assert np.abs(images[1, 32, 32] - np.array([60, 150, 90])).max() <= 4
    floats = d.images([2])
    assert floats.shape == (1, 3, 64, 64) and -1 <= floats.min() and floats.max() <= 1
    assert load_dataset(tmp_path / "celeba", resolution=32).image_shape == (32, 32, 3)
    assert d.describe()["num_attributes"] == 40


def test_celeba_errors(tmp_path):
    write_celeba(tmp_path / "a")
    (tmp_path / "a" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of the 3 images .* missing \(e.g. 000002.jpg\)"):
        load_dataset(tmp_path / "a")
    write_celeba(tmp_path / "b")
    text = (tmp_path / "b" / "list_attr_celeba.txt").read_text().splitlines()
    (tmp_path / "b" / "list_attr_celeba.txt").write_text("\n".join(text[:-1]) + "\n")
    with pytest.raises(DatasetError, match="announces 3 images but 2"):
        load_dataset(tmp_path / "b")
    write_celeba(tmp_path / "c", size=(100, 100))
    with pytest.raises(DatasetError, match="too small for the 128x128 crop"):
        load_dataset(tmp_path / "c").images([0])


# ------------------------------------------------------------------------------ bring-your-own
def test_custom_factor_sizes_npz(tmp_path):
    sizes = (3, 2, 4)
    np.savez(tmp_path / "mine.npz", images=coded_images(grid(sizes), height=16),
             factor_sizes=np.array(sizes), factor_names=np.array(["colour", "size", "pose"]))
    d = load_dataset(tmp_path / "mine.npz")
    assert d.factor_names == ("colour", "size", "pose") and d.image_shape == (16, 16, 3)
    assert isinstance(d.storage, np.memmap)
    check_grid_dataset(d, sizes)


def test_custom_factor_labels_h5_any_order_gray(tmp_path):
    sizes = (2, 3, 2)
    factors = grid(sizes)
    order = np.random.RandomState(3).permutation(len(factors))
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["images"] = coded_images(factors, height=8, channels=1)[order][..., 0]  # (M, H, W): one channel
        f["factors"] = factors[order] * 5  # any distinct values: ranked into classes
        f["factor_names"] = np.array([b"a", b"b", b"c"])
    d = load_dataset(tmp_path / "mine.h5")
    assert d.factor_names == ("a", "b", "c") and d.image_shape == (8, 8, 1)
    check_grid_dataset(d, sizes)
    rgb = load_dataset(tmp_path / "mine.h5", rgb=True)
    assert rgb.image_shape == (8, 8, 3) and rgb.images([0]).shape == (1, 3, 8, 8)


def test_custom_errors(tmp_path):
    sizes = (2, 3)
    factors = grid(sizes)
    bad = factors.copy()
    bad[0] = bad[1]
    np.savez(tmp_path / "dup.npz", images=coded_images(factors, 8), factors=bad)
    with pytest.raises(DatasetError, match="not a complete grid"):
        load_dataset(tmp_path / "dup.npz")
    np.savez(tmp_path / "count.npz", images=coded_images(factors, 8)[:5], factor_sizes=np.array(sizes))
    with pytest.raises(DatasetError, match=r"5 images but 'factor_sizes' \[2, 3\] make 6"):
        load_dataset(tmp_path / "count.npz")
    np.savez(tmp_path / "float.npz", images=np.zeros((6, 8, 8, 3), np.float32), factor_sizes=np.array(sizes))
    with pytest.raises(DatasetError, match=r"'images' has shape \(6, 8, 8, 3\) dtype float32, expected \(M, H, W, C\) uint8"):
        load_dataset(tmp_path / "float.npz")
    np.savez(tmp_path / "what.npz", pixels=np.zeros((6, 8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="cannot tell which dataset"):
        load_dataset(tmp_path / "what.npz")


def test_npz_member_offsets_map_the_right_bytes(tmp_path):
    a = np.arange(1000, dtype=np.int32).reshape(10, 100)
    b = np.asfortranarray(np.arange(60, dtype=np.float64).reshape(6, 10))
    np.savez(tmp_path / "x.npz", a=a, b=b)
    members = npz.list_members(tmp_path / "x.npz")
    assert not members["a"].compressed and members["b"].fortran_order
    assert np.array_equal(npz.open_member(tmp_path / "x.npz", "a"), a)
    assert np.array_equal(npz.open_member(tmp_path / "x.npz", "b"), b)
    with zipfile.ZipFile(tmp_path / "x.npz") as archive:
        assert set(archive.namelist()) == {"a.npy", "b.npy"}
