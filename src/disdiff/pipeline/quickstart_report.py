"""The quickstart's report: what was trained and from what, how long each step took, the metrics
(next to the paper's where it published a figure for the dataset), the metric curve over the
stage-3 steps, the linear probe, and the pictures.

Built from a :class:`QuickstartSummary` (plain data the pipeline hands over) and the files the
steps wrote; it imports nothing of :mod:`disdiff.pipeline.quickstart`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from disdiff.evaluation.tables import collect_records, factor_vae_votes
from disdiff.pipeline.curve import describe_settings
from disdiff.pipeline.dataset import QuickstartData
from disdiff.pipeline.layout import QuickstartLayout
from disdiff.pipeline.pretrained import STAGE_FILES, StagePlan, file_digest
from disdiff.pipeline.progress import format_minutes
from disdiff.pipeline.report import Report, plot_curve, plot_series, read_training_log
from disdiff.pipeline.settings import STAGE_TITLES, STAGES, QuickstartSettings
from disdiff.training.deviations import deviations_in_use

#: DisDiff-VQ as published (Yang et al. 2023, Table 1; 64x64, full-length GPU training). Only the
#: Shapes3D figures are recorded in this project; other datasets get no paper column.
#: Keyed by the dataset's registry name: (the paper's dataset, its figures). shapes3d-synth is
#: compared with the real Shapes3D figures, with a caveat in the report.
_SHAPES3D = ("Shapes3D", {"FactorVAE": "0.902 ± 0.043", "DCI": "0.723 ± 0.013"})
PAPER_FIGURES = {"shapes3d": _SHAPES3D, "shapes3d-synth": _SHAPES3D}
HEADLINE = ("FactorVAE", "DCI", "MIG", "beta-VAE")

LOSS_PLOTS = {
    "autoencoder": (["train/rec_loss", "val/rec_loss"], "stage 1: L1 reconstruction loss"),
    "ldm": (["train/loss_simple", "val/loss_simple_ema"], "stage 2: L1 noise-prediction loss"),
    "disdiff": (["train/loss_rec", "train/loss_dis"], "stage 3: reconstruction and disentangling loss"),
}
OVERHEAD_STEPS = ("export", "evaluate", "figures", "units", "curve", "report")


@dataclass
class CurvePoint:
    """Wall time of one evaluated stage-3 checkpoint in this invocation (the scores are in its JSON)."""

    step: int
    final: bool
    export_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    measured: bool = True  # False: its results came from an earlier invocation


@dataclass
class QuickstartSummary:
    settings: QuickstartSettings
    layout: QuickstartLayout
    data: QuickstartData
    plan: StagePlan
    timings: dict[str, float] = field(default_factory=dict)
    curve: list[CurvePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def build_report(summary: QuickstartSummary) -> tuple[Path, Path]:
    s, data, layout = summary.settings, summary.data, summary.layout
    report = Report(f"DisDiff quickstart on {data.label}")
    report.paragraph(
        f"Run finished {time.strftime('%Y-%m-%d %H:%M')} on {_cpu_name()} ({os.cpu_count()} logical CPUs), "
        f"{platform.platform()}; budget {s.minutes:g} minutes, seed {s.seed}. Dataset {data.label} "
        f"({data.dataset.source or data.spec}): {data.num_images} images at {s.resolution}x{s.resolution}, "
        + (f"factors {', '.join(f'{n} ({k})' for n, k in zip(data.dataset.factor_names, data.dataset.factor_sizes))}"
           if data.is_factor_grid else "no factor labels")
        + f"; N = {data.units} units{' (--units)' if s.units else ''}.")
    _training(report, summary)
    _metrics(report, summary)
    _units(report, layout)
    _pictures(report, summary)
    for note in summary.notes:
        report.paragraph(note)
    return report.write(layout.out)


# ------------------------------------------------------------------------------------ training
def _training(report: Report, summary: QuickstartSummary) -> None:
    s, layout, plan = summary.settings, summary.layout, summary.plan
    report.heading("Training")
    if plan.uses_pretrained:
        files = ", ".join(f"{name} (sha256 {file_digest(plan.pretrained_dir / name)[:12]})"
                          for name in STAGE_FILES.values())
        report.paragraph(
            f"Stages 1-2: the packaged checkpoints in {plan.pretrained_dir} ({files}); how they were trained is in "
            f"{plan.pretrained_dir / 'README.md'}. The whole training budget went to stage 3 "
            "(pass --from-scratch to train all three stages).")
    else:
        report.paragraph("All three stages were trained from scratch in this run"
                         + (" (--from-scratch)." if s.from_scratch else "."))
    if s.sets:
        report.paragraph("Config values changed with --set (merged after the small configs): "
                         + "; ".join(s.sets) + ".")
    rows = []
    for stage in STAGES:
        if stage not in plan.trained:
            rows.append([STAGE_TITLES[stage], "packaged", "-", "-"])
            continue
        info = layout.read_done(stage)
        seconds = info.get("training_seconds")
        rows.append([STAGE_TITLES[stage], str(info.get("global_step", "-")), f"{info.get('budget_minutes', 0):.1f}",
                     format_minutes(seconds) if isinstance(seconds, (int, float)) else "-"])
    report.table(["stage", "optimizer steps", "budget (min)", "training time"], rows)
    steps = [f"{name} {format_minutes(sec)}" for name, sec in summary.timings.items() if sec >= 1.0]
    if steps:
        report.paragraph("Wall time of this invocation: " + ", ".join(steps) + ".")
    overhead = sum(summary.timings.get(name, 0.0) for name in OVERHEAD_STEPS)
    report.paragraph(
        f"Export, evaluation (metric curve included), figures and report took {format_minutes(overhead)} in this "
        f"invocation; the budget set {format_minutes(s.overhead_minutes() * 60)} aside for them "
        f"(overhead_fraction {s.overhead_fraction:g}, at most {s.overhead_minutes_max:g} minutes)."
        + _speed_reserve_text(layout, plan, s))
    _stage3_recipe(report, layout)
    for stage in plan.trained:
        keys, title = LOSS_PLOTS[stage]
        series = read_training_log(layout.stage_dir(stage))
        # Values logged both per step and per epoch are stored as "<key>_step" / "<key>_epoch".
        keys = [key if key in series else f"{key}_step" for key in keys]
        report.image(plot_series(series, keys, title, layout.figures / f"loss_{stage}.png", log_y=stage != "disdiff"),
                     title)
        if stage == "autoencoder" and series.get("val/psnr"):
            step, psnr = series["val/psnr"][-1]
            report.paragraph(f"Stage 1 held-out reconstruction PSNR at step {step}: {psnr:.2f} dB.")


def _speed_reserve_text(layout: QuickstartLayout, plan: StagePlan, s: QuickstartSettings) -> str:
    """What stage 3's measured step time did to that reserve (:mod:`disdiff.pipeline.stage_timer`)."""
    if STAGES[-1] not in plan.trained:
        return ""
    info = layout.read_done(STAGES[-1])
    per_step, fixed, trained = (info.get(k) for k in ("seconds_per_step", "fixed_reserve_training_seconds",
                                                      "training_seconds"))
    if not all(isinstance(v, (int, float)) for v in (per_step, fixed, trained)):
        return ""
    return (f" Stage 3 measured {per_step:.3f} s per step, predicted the final steps at {s.tail_step_equivalents:g}"
            f" steps' worth ({format_minutes(per_step * s.tail_step_equivalents)}) and trained"
            f" {format_minutes(max(trained - fixed, 0.0))} beyond the {format_minutes(fixed)} the fixed reserve left"
            " (speed_reserve).")


def _stage3_recipe(report: Report, layout: QuickstartLayout) -> None:
    """Say which of stage 3's opt-in deviations from the paper's training this run used."""
    config = layout.stage_dir("disdiff") / "configs" / "config.yaml"
    if not config.is_file():
        return
    model = OmegaConf.to_container(OmegaConf.load(config).model, resolve=True)
    used = deviations_in_use(model.get("params", {}))
    lr = model.get("base_learning_rate")
    if used:
        switches = ", ".join(f"{name} = {value}" for name, value in used.items())
        report.paragraph(f"Stage 3 trained with these opt-in deviations from the paper's training: {switches} "
                         "(defined in disdiff.training.deviations and disdiff.models.image_encoder; the experiments "
                         "that chose them are in docs/EXPERIMENTS.md). "
                         f"Base learning rate {lr} (times the batch size).")
    else:
        report.paragraph(f"Stage 3 trained with the paper's loss and procedure (no opt-in deviation). "
                         f"Base learning rate {lr} (times the batch size).")


# ------------------------------------------------------------------------------------- metrics
def _metrics(report: Report, summary: QuickstartSummary) -> None:
    s, data, layout = summary.settings, summary.data, summary.layout
    report.heading("Disentanglement metrics")
    if not data.is_factor_grid:
        report.paragraph(
            f"No metrics: {data.label} has no ground-truth factor labels, and FactorVAE, DCI, MIG and beta-VAE are "
            "defined by how a code follows known factors. The grids below show what the units learned. (For CelebA "
            "the paper's measure is TAD on the 40 attributes: disdiff export and disdiff evaluate compute it from "
            "the stage-3 run directory.)")
        return
    records = [r for r in collect_records(layout.metrics) if r.get("step") is not None]
    if not records:
        report.paragraph("No evaluation results were found.")
        return
    final = records[-1]
    head = final.get("headline", {})
    paper_name, paper = PAPER_FIGURES.get(data.canonical or "", (None, None))
    header = ["metric", f"this run (step {final.get('step')})"]
    if paper:
        header.append(f"paper, {paper_name} (DisDiff-VQ)")
    rows = [[title, _fmt(head.get(title))] + ([paper.get(title, "-")] if paper else []) for title in HEADLINE]
    report.table(header, rows)
    report.paragraph(f"Final checkpoint evaluated with {describe_settings(final)}.")
    chance = 1.0 / max(len(data.dataset.factor_sizes), 1)
    text = (f"How to read this: FactorVAE's chance level with {len(data.dataset.factor_sizes)} factors is about "
            f"{chance:.2f}; a representation where each unit follows one factor scores near 1 on FactorVAE and DCI "
            "disentanglement.")
    if paper and data.canonical == "shapes3d-synth":
        text += (" The paper's numbers come from the real 64x64 Shapes3D and many GPU-hours of training; this run uses "
                 f"a rendered look-alike at {s.resolution}x{s.resolution}, small networks and minutes of CPU time.")
    report.paragraph(text)
    _curve(report, summary, records)
    _probe(report, records)
    _votes(report, records)


def _curve(report: Report, summary: QuickstartSummary, records: list[dict]) -> None:
    report.heading("Metric curve over the stage-3 steps")
    seconds = {p.step: p.export_seconds + p.evaluate_seconds for p in summary.curve if p.measured}
    rows = []
    for record in records:
        head = record.get("headline", {})
        wall = seconds.get(record["step"])
        rows.append([str(record["step"]), *(_fmt(head.get(t)) for t in HEADLINE), describe_settings(record),
                     format_minutes(wall) if wall is not None else "earlier run"])
    report.table(["stage-3 step", *HEADLINE, "evaluated with", "export + evaluation"], rows)
    report.paragraph(
        "The final checkpoint is evaluated as configured (published settings unless overridden); earlier ones with "
        "fewer DCI points, which makes DCI noisier there. Wall time of the curve's earlier points in this invocation: "
        f"{format_minutes(summary.timings.get('curve', 0.0))}.")
    plot = plot_curve(records, HEADLINE, summary.layout.figures / "metric_curve.png")
    report.image(plot, "FactorVAE, DCI disentanglement, MIG and beta-VAE against the stage-3 step "
                       "(hollow markers: cheaper evaluation settings)")


def _probe(report: Report, records: list[dict]) -> None:
    probed = [r for r in records if isinstance(r.get("probe"), dict) and r["probe"].get("factors")]
    if not probed:
        return
    final = probed[-1]
    probe = final["probe"]
    report.heading("Linear probe of the full code")
    header = ["factor", "chance"] + [f"step {r['step']}" for r in probed]
    rows = []
    for k, name in enumerate(probe["factors"]):
        rows.append([str(name), _fmt(probe["chance"][k])]
                    + [_fmt(r["probe"]["accuracy"][k]) if k < len(r["probe"].get("accuracy", [])) else "-"
                       for r in probed])
    report.table(header, rows)
    report.paragraph(
        "Test accuracy of a logistic regression from the whole standardised code (all units, all dimensions) to each "
        "factor, against always guessing the most frequent value. High accuracy with low FactorVAE/DCI means the "
        "code knows the factor but spreads it over several units.")
    per_unit = {
        "unit_accuracy": f"Per-unit probe at step {final['step']}: the same classifier on one unit's dimensions alone. "
                         "A disentangled code has one high entry per row and per column.",
        "unit_variance_explained": f"Variance explained at step {final['step']}: the share of each unit's variance "
                                   "that one factor's main effect explains (correlation ratio η², no classifier). "
                                   "Unlike the linear probe it also sees a factor a unit holds non-monotonically; a "
                                   "disentangled code has one entry near 1 per row.",
    }
    header = ["unit"] + [str(n) for n in probe["factors"]]
    for key, caption in per_unit.items():  # units x factors matrices of the final step
        if probe.get(key):
            report.table(header, [[str(j)] + [_fmt(v) for v in row] for j, row in enumerate(probe[key])])
            report.paragraph(caption)


def _votes(report: Report, records: list[dict]) -> None:
    voted = [(r, found) for r in records if (found := factor_vae_votes(r)) is not None]
    if not voted:
        return
    final, (names, shares, column) = voted[-1]
    report.heading("FactorVAE votes")
    report.table(["factor"] + [f"{column} {j}" for j in range(shares.shape[1])],
                 [[str(name)] + [_fmt(v) for v in row] for name, row in zip(names, shares)])
    report.paragraph(
        f"At step {final['step']}: for each factor, the share of its FactorVAE evaluation votes that each {column} won "
        f"(a vote goes to the {column} whose normalised variance falls most when that factor is held fixed). A factor "
        f"held by one {column} gives it a share near 1. A factor that none holds spreads its votes, and the score "
        "still credits the share its majority winner takes, so read FactorVAE together with this table and the η² "
        "above.")


# -------------------------------------------------------------------------------------- units
def _units(report: Report, layout: QuickstartLayout) -> None:
    files = sorted(layout.units.glob("step=*.json")) if layout.units.is_dir() else []
    if not files:
        return
    try:
        record = json.loads(files[-1].read_text())
        rows = record["units"]
    except (OSError, ValueError, KeyError):
        report.paragraph(f"The unit-usage file {files[-1]} could not be read.")
        return
    report.heading("Which units the decoder uses")
    table = []
    for row in rows:
        factor = "-" if row.get("top_factor") is None else f"{row['top_factor']} ({_fmt(row.get('top_eta2'))})"
        table.append([str(row["unit"]), f"{row['field_rms']:.4f}", f"{row['field_share']:.2f}", f"{row['gain']:.4f}",
                      factor])
    report.table(["unit", "field RMS", "share of the largest", "gain", "factor (η²)"], table)
    report.paragraph(
        f"At step {record.get('global_step')}, on {record.get('n')} random images with t in "
        f"[{record['t_range'][0]}, {record['t_range'][1]}) (the same as `disdiff units`): the RMS of each unit's "
        "sub-gradient field G_k, and its gain, the rise of the reconstruction loss when the unit's values are "
        "permuted across the images. A unit whose field is a few per cent of the largest is unused by the decoder; "
        "in the project's experiments such a unit took a new factor only once (E93), where live spare fields did "
        "several times. A unit with a live field and a gain near zero repeats what other units hold "
        "(docs/EXPERIMENTS.md, D13, D19).")


# ------------------------------------------------------------------------------------ pictures
def _pictures(report: Report, summary: QuickstartSummary) -> None:
    layout, data, plan = summary.layout, summary.data, summary.plan
    figures = layout.figures
    report.heading("Pictures")
    caption = (f"{data.label}: each row sweeps one ground-truth factor" if data.is_factor_grid
               else f"{data.label}: random images")
    report.image(figures / "dataset_preview.png", caption)
    report.image(figures / "swap.png", "swap grid: row k takes unit k from the reference image, keeps the other units; "
                                       "one x_T per column")
    report.image(figures / "swap_partial.png", "partial swap: only the swapped unit's sub-gradient G_k is added to the "
                                               "frozen model")
    report.image(figures / "traverse.png", "traversal: each unit moved along its first principal direction")
    if "ldm" in plan.trained:
        samples = sorted((layout.stage_dir("ldm") / "images" / "train").glob("samples_step-*.png"))
        if samples:
            report.image(samples[-1], "stage 2: unconditional DDIM samples of the latent diffusion model")
    if "autoencoder" in plan.trained:
        recs = sorted((layout.stage_dir("autoencoder") / "images" / "train").glob("reconstructions_step-*.png"))
        if recs:
            report.image(recs[-1], "stage 1: autoencoder reconstructions")
