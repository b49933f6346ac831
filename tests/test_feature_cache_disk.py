"""The frozen-feature cache kept on disk (``disdiff export --feature-cache DIR``): a later process reads
the features instead of recomputing them, with the same codes; the file name separates frozen networks
and datasets; a damaged file is named, never silently used or replaced."""

import numpy as np
import pytest
from disdiff_support import ImageSet, count_feature_calls, make_ldm_checkpoint, make_module, save_module_checkpoint

from disdiff.api import DisDiff
from disdiff.cli.main import main
from disdiff.evaluation.export import FrozenFeatureCache, dataset_cache_key, export_representations

DPM = {"backbone": "dpm", "hidden": 16}
FACTORS = [2, 2, 2, 2, 2, 2]  # a 64-image shapes3d-synth at 16x16, the test LDM's image size


@pytest.fixture
def feature_calls(monkeypatch):
    """How many images went through the frozen networks (DPMFeatureEncoder.features)."""
    return count_feature_calls(monkeypatch)


def test_a_second_process_reads_the_features_from_disk_and_gets_the_same_codes(ldm_ckpt, tmp_path, feature_calls):
    data = ImageSet(10)
    model = DisDiff(make_module(ldm_ckpt, encoder_config=DPM, seed=0))
    later = DisDiff(make_module(ldm_ckpt, encoder_config=DPM, seed=1))  # another checkpoint, same frozen networks
    feature_calls.clear()  # building a module runs the encoder once on a probe image
    direct = export_representations(later, data, batch_size=4, progress=False)
    assert sum(feature_calls) == 10

    key = dataset_cache_key("toy", {"n": 10})
    first = FrozenFeatureCache(tmp_path / "cache")
    export_representations(model, data, 4, False, feature_cache=first, dataset_key=key)
    assert sum(feature_calls) == 20 and first.loaded_from is None
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith(f"features-{key}-") and files[0].name.endswith("-10.npy")

    fresh = FrozenFeatureCache(tmp_path / "cache")  # what a new `disdiff export` process starts with
    cached = export_representations(later, data, 4, False, feature_cache=fresh, dataset_key=key)
    assert sum(feature_calls) == 20  # nothing recomputed
    assert fresh.loaded_from == files[0] and fresh.fill_seconds == 0.0
    assert np.allclose(cached, direct, atol=1e-5)


def test_other_frozen_networks_or_another_dataset_get_their_own_file(ldm_ckpt, tmp_path, feature_calls):
    data = ImageSet(6)
    cache_dir = tmp_path / "cache"
    model = DisDiff(make_module(ldm_ckpt, encoder_config=DPM, seed=0))
    other = DisDiff(make_module(make_ldm_checkpoint(tmp_path / "other.ckpt", seed=7), encoder_config=DPM, seed=0))
    feature_calls.clear()
    key = dataset_cache_key("toy", {"n": 6})
    export_representations(model, data, 4, False, feature_cache=FrozenFeatureCache(cache_dir), dataset_key=key)
    got = export_representations(other, data, 4, False, feature_cache=FrozenFeatureCache(cache_dir), dataset_key=key)
    assert np.allclose(got, export_representations(other, data, 4, False), atol=1e-5)
    export_representations(model, data, 4, False, feature_cache=FrozenFeatureCache(cache_dir),
                           dataset_key=dataset_cache_key("toy", {"n": 6, "resolution": 16}))
    assert len(list(cache_dir.iterdir())) == 3 and sum(feature_calls) == 6 * 4
    assert dataset_cache_key("a", {"x": 1, "y": 2}) == dataset_cache_key("a", {"y": 2, "x": 1})


def test_the_same_dataset_name_in_two_data_folders_gets_two_cache_keys(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert dataset_cache_key("shapes3d", {}, one) != dataset_cache_key("shapes3d", {}, two)
    assert dataset_cache_key("shapes3d", {}, one) == dataset_cache_key("shapes3d", {}, tmp_path / "x" / ".." / "one")
    # no folder: the key of the files written before the folder was part of it
    assert dataset_cache_key("shapes3d", {}) == dataset_cache_key("shapes3d", {}, None) != dataset_cache_key("shapes3d", {}, one)


def test_a_damaged_cache_file_is_named_and_left_alone(ldm_ckpt, tmp_path):
    data = ImageSet(6)
    model = DisDiff(make_module(ldm_ckpt, encoder_config=DPM, seed=0))
    cache = FrozenFeatureCache(tmp_path / "cache")
    key = dataset_cache_key("toy", {})
    path = cache.file_for(key, model.module.encoder.features_fingerprint(), len(data))
    path.parent.mkdir()
    np.save(path, np.zeros((5, 3), dtype=np.float32))  # the wrong number of images
    with pytest.raises(OSError, match=r"feature cache .*features-.*-6\.npy.*\(6, F\)"):
        export_representations(model, data, 4, False, feature_cache=cache, dataset_key=key)
    assert np.load(path).shape == (5, 3)
    path.write_bytes(b"not an npy file")
    with pytest.raises(OSError, match=r"feature cache .*features-.*-6\.npy: cannot be read"):
        export_representations(model, data, 4, False, feature_cache=cache, dataset_key=key)
    assert path.read_bytes() == b"not an npy file"


def test_the_export_command_with_a_feature_cache_writes_the_same_representations(ldm_ckpt, tmp_path, feature_calls):
    module = make_module(ldm_ckpt, encoder_config=DPM, seed=0).eval()
    ckpt = save_module_checkpoint(module, tmp_path / "run" / "checkpoints" / "step=00000000.ckpt")
    common = [str(ckpt), "--dataset", "shapes3d-synth", "--dataset-option", "resolution=16",
              "--dataset-option", f"factor_sizes={FACTORS}", "--no-progress"]
    assert main(["export", *common, "--out", str(tmp_path / "plain.npz")]) == 0
    cache = ["--feature-cache", str(tmp_path / "cache")]
    assert main(["export", *common, *cache, "--out", str(tmp_path / "first.npz")]) == 0
    calls_after_first = sum(feature_calls)
    assert main(["export", *common, *cache, "--out", str(tmp_path / "second.npz")]) == 0
    # Loading the checkpoint runs the encoder on one probe image; the 64 dataset images were read from disk.
    assert sum(feature_calls) - calls_after_first < 64
    latents = [np.load(tmp_path / f"{name}.npz")["latents"] for name in ("plain", "first", "second")]
    assert latents[0].shape == (64, 3, 4)
    assert np.allclose(latents[1], latents[0], atol=1e-5) and np.array_equal(latents[1], latents[2])


def test_bf16_features_are_close_to_float32_and_kept_in_their_own_file(ldm_ckpt, tmp_path, feature_calls):
    data = ImageSet(8)
    model = DisDiff(make_module(ldm_ckpt, encoder_config=DPM, seed=0))
    encoder = model.module.eval().encoder
    key = dataset_cache_key("toy", {"n": 8})
    exact = FrozenFeatureCache(tmp_path / "cache")
    half = FrozenFeatureCache(tmp_path / "cache", bf16=True)
    f32 = np.asarray(exact.features(encoder, data, 4, False, key))
    b16 = np.asarray(half.features(encoder, data, 4, False, key))
    assert not exact.used_bf16 and half.used_bf16
    assert b16.dtype == np.float32 and b16.shape == f32.shape
    # bf16 keeps 8 bits of mantissa: the features move, by a fraction of a percent, not more.
    relative = np.linalg.norm(b16 - f32) / np.linalg.norm(f32)
    assert 0.0 < relative < 0.03
    names = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert len(names) == 2 and sum("-bf16-8.npy" in name for name in names) == 1
    # A later process asking for bf16 features reads the bf16 file, never the float32 one.
    again = FrozenFeatureCache(tmp_path / "cache", bf16=True)
    calls = sum(feature_calls)
    assert np.array_equal(again.features(encoder, data, 4, False, key), b16) and sum(feature_calls) == calls
    assert again.loaded_from is not None and again.loaded_from.name.endswith("-bf16-8.npy")
    # The codes of the head on bf16 features stay close to the float32 export's.
    codes = export_representations(model, data, 4, False, feature_cache=FrozenFeatureCache(bf16=True))
    reference = export_representations(model, data, 4, False)
    assert np.linalg.norm(codes - reference) / np.linalg.norm(reference) < 0.05


def test_the_bf16_switch_reads_auto_and_the_command_line_words(monkeypatch):
    from disdiff.utils import precision

    assert FrozenFeatureCache(bf16="TRUE").bf16 is True and FrozenFeatureCache(bf16="false").bf16 is False
    with pytest.raises(ValueError, match="bf16 must be true, false or auto"):
        FrozenFeatureCache(bf16="fast")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_bf16(FrozenFeatureCache(bf16="auto").bf16, "cpu") is False
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_bf16(FrozenFeatureCache(bf16="auto").bf16, "cpu") is True


def test_the_export_command_with_bf16_features_writes_codes_close_to_float32(ldm_ckpt, tmp_path):
    module = make_module(ldm_ckpt, encoder_config=DPM, seed=0).eval()
    ckpt = save_module_checkpoint(module, tmp_path / "run" / "checkpoints" / "step=00000000.ckpt")
    common = [str(ckpt), "--dataset", "shapes3d-synth", "--dataset-option", "resolution=16",
              "--dataset-option", f"factor_sizes={FACTORS}", "--no-progress"]
    assert main(["export", *common, "--out", str(tmp_path / "plain.npz")]) == 0
    assert main(["export", *common, "--features-bf16", "true", "--out", str(tmp_path / "bf16.npz")]) == 0
    plain, bf16 = (np.load(tmp_path / f"{name}.npz")["latents"] for name in ("plain", "bf16"))
    assert plain.shape == bf16.shape == (64, 3, 4) and not np.array_equal(plain, bf16)
    assert np.linalg.norm(bf16 - plain) / np.linalg.norm(plain) < 0.05
