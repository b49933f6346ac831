"""``disdiff data list|info|preview`` through disdiff.cli.main.main."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from disdiff.cli.main import main


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DISDIFF_DATA", raising=False)


def test_info_synth(capsys):
    assert main(["data", "info", "shapes3d-synth"]) == 0
    out = capsys.readouterr().out
    for text in ("floor_hue", "orientation  15", "images:       480000", "(64, 64, 3)", "rendered"):
        assert text in out


def test_info_json_of_a_file(tmp_path, capsys):
    np.savez(tmp_path / "mine.npz", images=np.zeros((6, 8, 8, 3), np.uint8), factor_sizes=np.array([2, 3]),
             factor_names=np.array(["a", "b"]))
    assert main(["data", "info", str(tmp_path / "mine.npz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["factor_names"] == ["a", "b"] and info["num_images"] == 6 and info["source"] == str(tmp_path / "mine.npz")


def test_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / "sub" / "preview.png"
    code = main(["data", "preview", "shapes3d-synth", "--out", str(out), "--resolution", "16", "--seed", "2",
                 "-o", "factor_sizes=[3,2,2,2,4,3]"])
    assert code == 0 and out.exists()
    image = Image.open(out)
    assert image.width > 3 * 64 and image.height > 6 * 64  # six rows, tiles upscaled to 64 px
    assert not [p for p in out.parent.iterdir() if p.name != "preview.png"]  # written atomically


def test_preview_of_celeba_like_folder(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    lines = ["2", " ".join(f"A{k}" for k in range(40))]
    for i in range(2):
        Image.new("RGB", (178, 218), (100 * i, 50, 50)).save(root / "img_align_celeba" / f"{i}.jpg")
        lines.append(f"{i}.jpg " + " ".join(["1"] * 40))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    assert main(["data", "preview", str(root), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").exists()


def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("disdiff data: error:") and "missing.h5" in err and "\n" not in err
    assert main(["data", "info", "shapes3d", "--data-dir", str(tmp_path)]) == 1
    assert "google-deepmind/3d-shapes" in capsys.readouterr().err
    assert main(["data", "info", "shapes3d-synth", "-o", "bogus=1"]) == 1
    assert "unknown option" in capsys.readouterr().err


def test_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("shapes3d-synth", "shapes3d", "mpi3d", "cars3d", "dsprites", "celeba"))
