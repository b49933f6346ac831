"""Bad training data through ``disdiff train``: a one-line error naming the problem, exit status 1, and
no run directory made (the dataset is opened and checked before anything is written)."""

from __future__ import annotations

import numpy as np
import pytest
from test_faults_helpers import FACTORS, data_config, make_stage1_checkpoint, stage2_config, train, write_config


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return make_stage1_checkpoint(tmp_path_factory.mktemp("s1") / "s1.ckpt")


def _custom(path, images):
    np.savez(path, images=images, factor_sizes=np.array(FACTORS))
    return path


def _bad_files(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip archive" * 8)
    good = _custom(tmp_path / "good.npz", np.zeros((64, 16, 16, 3), np.uint8))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {
        "missing": (tmp_path / "nope.npz", ["nope.npz", "neither a dataset name", "nor an existing file"]),
        "corrupt": (corrupt, ["corrupt.npz", "neither an .npz (zip) archive nor an HDF5 file"]),
        "truncated": (truncated, ["truncated.npz"]),
        "float-images": (_custom(tmp_path / "float.npz", np.zeros((64, 16, 16, 3), np.float32)),
                         ["float.npz", "dtype float32", "expected (M, H, W, C) uint8"]),
        "four-channels": (_custom(tmp_path / "rgba.npz", np.zeros((64, 16, 16, 4), np.uint8)),
                          ["rgba.npz", "(64, 16, 16, 4)", "C 1 or 3"]),
        "wrong-size": (_custom(tmp_path / "big.npz", np.zeros((64, 32, 32, 3), np.uint8)),
                       ["big.npz", "are 32x32 with 3 channel(s)", "configured for 16x16", "resolution, in_channels"]),
        "missing-factors": (tmp_path / "nofactors.npz", ["nofactors.npz", "cannot tell which dataset this file holds"]),
    }


CASES = ["missing", "corrupt", "truncated", "float-images", "four-channels", "wrong-size", "missing-factors"]


@pytest.mark.parametrize("case", CASES)
def test_bad_dataset_file(tmp_path, stage1, capsys, case):
    np.savez(tmp_path / "nofactors.npz", images=np.zeros((64, 16, 16, 3), np.uint8))
    path, expected = _bad_files(tmp_path)[case]
    config = stage2_config(stage1)
    config["data"] = data_config(dataset=str(path), options={})
    run = tmp_path / "run"
    assert train(["-b", write_config(tmp_path / "c.yaml", config), "--run-dir", str(run)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("disdiff train: error: ")
    for fragment in expected:
        assert fragment in line, (fragment, line)
    assert not run.exists()
    assert path.name == "nope.npz" or path.is_file()  # the input is left alone


def test_built_in_dataset_at_the_wrong_resolution(tmp_path, stage1, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", stage2_config(stage1))
    assert train(["-b", config, "--run-dir", str(run), "data.params.dataset_options.resolution=32"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "dataset 'shapes3d-synth' are 32x32" in line and "configured for 16x16" in line, line
    assert not run.exists()


def test_unknown_dataset_option_lists_the_accepted_ones(tmp_path, stage1, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", stage2_config(stage1))
    assert train(["-b", config, "--run-dir", str(run), "data.params.dataset_options.resolutoin=16"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown option(s) ['resolutoin']" in line and "resolution" in line.split("accepted")[-1], line
    assert not run.exists()
