"""The quickstart end to end at a tiny budget: a bring-your-own dataset, the packaged-stages and
from-scratch paths, an unlabeled dataset, bad input, the console, the report, resume."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import yaml
from PIL import Image
from quickstart_support import STAGE_LINE, TINY_OVERRIDES, make_grid_npz, make_pretrained, tiny_settings

from disdiff.cli.main import main
from disdiff.pipeline.dataset import SPARE_UNITS, UNITS_WITHOUT_FACTORS
from disdiff.pipeline.quickstart import Quickstart, QuickstartSettings
from disdiff.pipeline.report import read_training_log
from disdiff.training.deviations import deviations_in_use


@pytest.fixture(autouse=True)
def _small(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    # The probe's published sizes (10,000 + 5,000 points) are more than a 16-image test needs.
    from disdiff.metrics import probe

    monkeypatch.setitem(probe.DEFAULTS, "num_train", 300)
    monkeypatch.setitem(probe.DEFAULTS, "num_test", 100)


def _stage3_config(out):
    return yaml.safe_load((out / "stage3_disdiff" / "configs" / "config.yaml").read_text())


def _table_rows(markdown: str, first_header: str) -> list[list[str]]:
    """Rows of the markdown table whose header starts with ``first_header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_bring_your_own_npz_end_to_end(tmp_path, capsys):
    npz = make_grid_npz(tmp_path / "grid.npz", sizes=(4, 4), size=32, grey=True)
    settings = tiny_settings(tmp_path / "qs", dataset=str(npz))
    md_path, html_path = Quickstart(settings).run()
    out = settings.out

    # The console holds the stage lines and nothing else; the rest went to the log file.
    console = capsys.readouterr()
    lines = console.out.splitlines()
    assert lines and all(STAGE_LINE.match(line) for line in lines), [x for x in lines if not STAGE_LINE.match(x)][:3]
    assert console.err == ""
    for title in ("data grid.npz", "stage 1 autoencoder", "stage 2 LDM", "stage 3 DisDiff", "export", "evaluate",
                  "figures", "unit usage", "metric curve", "report"):
        assert any(f"] {title}: " in line for line in lines), title
    log = (out / "quickstart.log").read_text()
    assert "GPU available" in log  # Lightning's own messages are in the log ...
    assert "GPU available" not in console.out  # ... not on the console

    # 32x32 grey images became 16x16 RGB for the networks; N = the number of factors + 2 spare units.
    config = _stage3_config(out)
    assert config["data"]["params"]["dataset"] == str(npz.resolve())
    assert config["data"]["params"]["dataset_options"] == {"resolution": 16, "rgb": True}
    assert config["model"]["params"]["num_units"] == 2 + SPARE_UNITS == 4
    assert config["model"]["params"]["encoder_config"]["resolution"] == 16

    markdown = md_path.read_text()
    assert markdown.startswith("# DisDiff quickstart on grid.npz")
    # No published figure for this dataset: no paper column, no comparison paragraph.
    assert "| paper," not in markdown and "The paper's numbers" not in markdown
    # The report names every opt-in deviation of stage 3's config (see test_quickstart_parts for the wording).
    used = deviations_in_use(config["model"]["params"])
    assert ("no opt-in deviation" in markdown) == (not used)
    for name, value in used.items():
        assert f"{name} = {value}" in markdown
    metrics = {row[0]: row[1] for row in _table_rows(markdown, "metric")}
    for name in ("FactorVAE", "DCI", "MIG", "beta-VAE"):
        assert 0.0 <= float(metrics[name]) <= 1.0
    # The metric curve: the final checkpoint and earlier ones, by step, with its plot.
    curve = _table_rows(markdown, "stage-3 step")
    steps = [int(row[0]) for row in curve]
    assert steps == sorted(steps) and len(steps) >= 3 and steps[-1] == 12
    assert all(0.0 <= float(row[1]) <= 1.0 for row in curve)
    assert "dci.num_test 50 (published 5000)" in curve[0][5]  # an earlier point: fewer DCI points, said so
    assert "dci.num_test 100 (published 5000)" in curve[-1][5]
    assert Image.open(out / "figures" / "metric_curve.png").size[0] > 100
    # The probe: one row per factor, accuracy at every evaluated step.
    probe = _table_rows(markdown, "factor")
    assert [row[0] for row in probe] == ["side", "brightness"] and len(probe[0]) == 2 + len(steps)
    # Two per-unit tables of the final step: the probe, then the variance explained (shares in [0, 1]).
    unit_tables = [i for i, line in enumerate(markdown.splitlines()) if line.startswith("| unit |")]
    assert len(unit_tables) == 3 and "Variance explained at step 12" in markdown
    lines = markdown.splitlines()
    shares = list(itertools.takewhile(lambda row: row.startswith("|"), lines[unit_tables[1] + 2:]))
    assert shares and all(-1e-9 <= float(v) <= 1.0 + 1e-6 for row in shares for v in row.strip("|").split("|")[1:])
    # The FactorVAE votes table is there exactly when the evaluation has votes. The small config's head
    # starts from the ICA code (ica_init), whose units have unit variance, so even after 12 steps the code
    # has active dimensions and there are votes, one row per factor.
    final_record = json.loads(sorted((out / "stage3_disdiff" / "metrics").glob("step=*.json"))[-1].read_text())
    votes = final_record["metrics"]["factor_vae"]["eval_votes"]
    assert len(votes) == 2 and "## FactorVAE votes" in markdown
    # Then which units the decoder uses: one row per unit, the largest field's share 1, factors named.
    usage = _table_rows(markdown, "unit | field RMS")
    assert [row[0] for row in usage] == ["0", "1", "2", "3"] and max(float(row[2]) for row in usage) == 1.0
    assert all(float(row[1]) >= 0 and row[4].split(" (")[0] in ("side", "brightness") for row in usage)
    assert json.loads(next((out / "stage3_disdiff" / "units").glob("step=*.json")).read_text())["global_step"] == 12
    for figure in ("swap.png", "swap_partial.png", "traverse.png", "dataset_preview.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    html = html_path.read_text()
    assert "data:image/png;base64," in html and "<table>" in html  # self-contained

    # Run again: everything is complete, so nothing is retrained or recomputed.
    mtimes = {p: p.stat().st_mtime for p in [*out.rglob("*.ckpt"), *out.rglob("*.npz"), *out.rglob("step=*.json")]}
    Quickstart(settings).run()
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes


def test_packaged_stages_give_stage3_the_whole_budget(tmp_path):
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32,
                             factor_sizes=[2, 2, 2, 2, 2, 3], pretrained_dir=pretrained)
    md_path, _ = Quickstart(settings).run()
    out = settings.out
    assert not (out / "stage1_autoencoder").exists() and not (out / "stage2_ldm").exists()
    assert _stage3_config(out)["model"]["params"]["ldm_ckpt"] == str(pretrained / "stage2.ckpt")
    done = json.loads((out / "stage3_disdiff" / "DONE.json").read_text())
    # All training minutes to stage 3 (less what the data step used), not its from-scratch half.
    assert 0.9 * settings.training_minutes() < done["budget_minutes"] <= settings.training_minutes()
    markdown = md_path.read_text()
    assert f"packaged checkpoints in {pretrained}" in markdown and "stage2.ckpt (sha256 " in markdown
    assert "0.902" in markdown and "| paper, Shapes3D" in markdown  # shown next to the paper's Shapes3D figure
    assert len(_table_rows(markdown, "stage-3 step")) >= 3
    assert [row[0] for row in _table_rows(markdown, "factor")][:2] == ["floor_hue", "wall_hue"]


def test_from_scratch_trains_all_stages_despite_packaged_ones(tmp_path):
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32,
                             factor_sizes=[2, 2, 2, 2, 2, 3], pretrained_dir=pretrained, from_scratch=True)
    md_path, _ = Quickstart(settings).run()
    out = settings.out
    for stage in ("stage1_autoencoder", "stage2_ldm", "stage3_disdiff"):
        assert json.loads((out / stage / "DONE.json").read_text())["global_step"] > 0
    assert str(out / "stage2_ldm") in _stage3_config(out)["model"]["params"]["ldm_ckpt"]
    markdown = md_path.read_text()
    assert "trained from scratch in this run (--from-scratch)" in markdown
    assert len(_table_rows(markdown, "stage-3 step")) >= 3


def test_unlabeled_dataset_trains_draws_grids_and_says_why_no_metrics(tmp_path, capsys):
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, 21)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(root / "img_align_celeba" / name)
    attributes = ["Smiling", "Young"]
    (root / "list_attr_celeba.txt").write_text(
        f"{len(names)}\n{' '.join(attributes)}\n" + "".join(f"{n} 1 -1\n" for n in names))
    settings = tiny_settings(tmp_path / "qs", dataset=str(root))
    md_path, _ = Quickstart(settings).run()
    markdown = md_path.read_text()
    assert "No metrics: celeba has no ground-truth factor labels" in markdown
    assert not (settings.out / "stage3_disdiff" / "metrics").exists()
    for figure in ("swap.png", "swap_partial.png", "traverse.png"):
        assert (settings.out / "figures" / figure).stat().st_size > 0
    assert _stage3_config(settings.out)["model"]["params"]["num_units"] == UNITS_WITHOUT_FACTORS == 8
    lines = capsys.readouterr().out.splitlines()
    assert all(STAGE_LINE.match(line) for line in lines)
    assert any("] evaluate: skipped" in line for line in lines)
    # Unit usage needs no labels: one row per unit, no factor named (one pseudo-factor value per image).
    usage = _table_rows(markdown, "unit | field RMS")
    assert len(usage) == UNITS_WITHOUT_FACTORS and all(row[4] == "-" for row in usage)


# ------------------------------------------------------------------------------------ bad input
def _fails_before_training(tmp_path, capsys, *args):
    out = tmp_path / "qs"
    code = main(["quickstart", "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("disdiff quickstart: error: ")
    assert not out.exists()  # nothing written, nothing trained
    return err[0]


def test_missing_dataset_file(tmp_path, capsys):
    message = _fails_before_training(tmp_path, capsys, "--dataset", str(tmp_path / "nowhere.npz"))
    assert "--dataset" in message and "nowhere.npz" in message and "no such file" in message


def test_dataset_too_small_for_a_validation_split(tmp_path, capsys):
    npz = make_grid_npz(tmp_path / "tiny.npz", sizes=(3, 3))
    message = _fails_before_training(tmp_path, capsys, "--dataset", str(npz), "--resolution", "16")
    assert "9 images are too few" in message and "at least 10" in message and "tiny.npz" in message


def test_resolution_not_a_multiple_of_16(tmp_path, capsys):
    message = _fails_before_training(tmp_path, capsys, "--resolution", "40")
    assert "--resolution 40" in message and "multiple of 16" in message


def test_output_folder_of_another_run_is_left_alone(tmp_path, capsys):
    out = tmp_path / "qs"
    out.mkdir()
    previous = {"identity": {"dataset": "shapes3d-synth", "resolution": 32, "factor_sizes": None, "units": 6,
                             "seed": 1, "from_scratch": False, "stages": {}}}
    (out / "quickstart.json").write_text(json.dumps(previous))
    npz = make_grid_npz(tmp_path / "grid.npz")
    code = main(["quickstart", "--out", str(out), "--dataset", str(npz), "--resolution", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "holds a quickstart run with other settings" in err[0]
    assert json.loads((out / "quickstart.json").read_text()) == previous
    assert sorted(p.name for p in out.iterdir()) == ["quickstart.json"]


def test_units_override_the_number_of_factors(tmp_path):
    npz = make_grid_npz(tmp_path / "grid.npz")
    quick = Quickstart(tiny_settings(tmp_path / "qs", dataset=str(npz), units=5))
    quick.prepare()
    assert quick.data.units == 5 and quick.stage_config("disdiff").model.params.num_units == 5
    assert not (tmp_path / "qs").exists()


# ------------------------------------------------------------------------------ resume, budget
def test_quickstart_resumes_a_stage_in_progress(tmp_path):
    from disdiff.pipeline.console import Console

    def quickstart(max_steps: int) -> Quickstart:
        overrides = {**TINY_OVERRIDES, "autoencoder": [*TINY_OVERRIDES["autoencoder"],
                                                       f"lightning.trainer.max_steps={max_steps}"]}
        quick = Quickstart(tiny_settings(tmp_path / "qs", factor_sizes=[2, 2, 2, 2, 4, 3], overrides=overrides),
                           console=Console())
        quick.prepare()
        return quick

    quick = quickstart(4)
    quick.out.mkdir(parents=True)
    quick.train_stage("autoencoder")
    # Simulate an interruption during stage 1: no DONE marker, but a last.ckpt.
    (quick.done_marker("autoencoder")).unlink()
    first_step = json.loads((quick.stage_dir("autoencoder") / "run.json").read_text())["invocations"][0]
    assert first_step["resume_from"] is None
    quick = quickstart(8)
    quick.train_stage("autoencoder")
    invocations = json.loads((quick.stage_dir("autoencoder") / "run.json").read_text())["invocations"]
    assert invocations[-1]["resume_from"].endswith(".ckpt")
    assert json.loads(quick.done_marker("autoencoder").read_text())["global_step"] == 8
    # The loss history of the first invocation survives the resume.
    logs = quick.stage_dir("autoencoder") / "logs"
    assert (logs / "metrics.part0.csv").is_file()
    first_steps = {step for step, _ in _series(logs / "metrics.part0.csv")}
    all_steps = {step for step, _ in read_training_log(quick.stage_dir("autoencoder"))["train/rec_loss"]}
    assert first_steps and first_steps <= all_steps


def _series(path):
    from disdiff.pipeline.report import _read_csv_into

    series = {}
    _read_csv_into(path, series)
    return series["train/rec_loss"]


def test_stage_budgets_absorb_an_earlier_overrun(tmp_path):
    settings = QuickstartSettings(out=tmp_path / "qs", minutes=20.0)
    shares = settings.stage_minutes()  # 15 training minutes split 0.2 / 0.3 / 0.5
    qs = Quickstart(settings)
    # on time: every stage gets its share
    assert qs.stage_budget_minutes("autoencoder") == pytest.approx(shares["autoencoder"], abs=0.01)
    # 2 minutes late before the ldm stage: the ldm stage gives them back, the others keep theirs
    qs.clock.deadline -= 60.0 * (shares["autoencoder"] + 2.0)
    assert qs.stage_budget_minutes("ldm") == pytest.approx(shares["ldm"] - 2.0, abs=0.01)
    # hopelessly late: a floor of a tenth of the share still trains something
    qs.clock.deadline -= 60.0 * 100
    assert qs.stage_budget_minutes("disdiff") == pytest.approx(0.1 * shares["disdiff"])
