"""The quickstart report: a markdown file and a self-contained HTML page (images inlined).

The report is assembled from what the runs wrote to disk (CSV logs, metric JSONs, PNG grids),
so it can be rebuilt at any time without recomputing anything.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from disdiff.utils.io import atomic_path, atomic_write_text  # noqa: E402


def read_training_log(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Series ``name -> [(step, value), ...]`` from a run's CSV logs (empty if absent).

    A resumed run has its earlier segments in ``logs/metrics.partK.csv``; they are read first.
    """
    logs = Path(run_dir) / "logs"
    parts = sorted(logs.glob("metrics.part*.csv"), key=lambda p: int(p.stem.split("part")[-1]))
    series: dict[str, list[tuple[int, float]]] = {}
    for path in [*parts, logs / "metrics.csv"]:
        if path.is_file():
            _read_csv_into(path, series)
    return series


def _read_csv_into(path: Path, series: dict[str, list[tuple[int, float]]]) -> None:
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    series.setdefault(key, []).append((int(float(step)), number))


def _save_figure(fig, ax, path: str | Path) -> Path:
    """Grid, legend and tight layout, then write the PNG atomically and close the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def plot_series(series: dict[str, list[tuple[int, float]]], keys: list[str], title: str, path: str | Path,
                log_y: bool = False) -> Path | None:
    """One line per key against the training step; ``None`` if none of the keys has data."""
    present = [k for k in keys if series.get(k)]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for key in present:
        steps, values = zip(*series[key])
        ax.plot(steps, values, label=key, linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_title(title)
    if log_y and all(v > 0 for k in present for _, v in series[k]):
        ax.set_yscale("log")
    return _save_figure(fig, ax, path)


def plot_curve(records: list[dict], titles: tuple[str, ...] | list[str], path: str | Path) -> Path | None:
    """Headline metrics of evaluation records against their step, one line per metric.

    Points evaluated at other than the published settings are drawn hollow. ``None`` if no record
    has a step and a score.
    """
    from disdiff.pipeline.curve import describe_settings

    points = [r for r in records if r.get("step") is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    drawn = False
    for title in titles:
        rows = [(r["step"], r.get("headline", {}).get(title), describe_settings(r) == "published settings")
                for r in points]
        rows = [(step, value, full) for step, value, full in rows if isinstance(value, (int, float))]
        if not rows:
            continue
        steps, values, _ = zip(*rows)
        line, = ax.plot(steps, values, linewidth=1.2, label=title)
        for step, value, published in rows:
            ax.plot([step], [value], marker="o", color=line.get_color(),
                    markerfacecolor=line.get_color() if published else "white")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("stage-3 step")
    ax.set_ylim(0.0, 1.0)
    ax.set_title("disentanglement metrics against the stage-3 step")
    return _save_figure(fig, ax, path)


@dataclass
class Report:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)  # (kind, payload)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, path: str | Path, caption: str) -> None:
        if path is not None and Path(path).is_file():
            self.blocks.append(("image", (Path(path), caption)))

    # ------------------------------------------------------------------ output
    def to_markdown(self, relative_to: Path) -> str:
        lines = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "heading":
                lines += [f"## {payload}", ""]
            elif kind == "paragraph":
                lines += [str(payload), ""]
            elif kind == "table":
                header, rows = payload
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(r) + " |" for r in rows]
                lines.append("")
            elif kind == "image":
                path, caption = payload
                rel = Path(path).resolve().relative_to(relative_to.resolve()) if Path(path).resolve().is_relative_to(relative_to.resolve()) else path
                lines += [f"![{caption}]({rel.as_posix() if isinstance(rel, Path) else rel})", f"*{caption}*", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
            "th{background:#eee}img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}"
            "figure{margin:1em 0}figcaption{color:#555;font-size:90%}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, payload in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{html.escape(str(payload))}</h2>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(str(payload))}</p>")
            elif kind == "table":
                header, rows = payload
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
                parts.append("</table>")
            elif kind == "image":
                path, caption = payload
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
        atomic_write_text(md_path, self.to_markdown(out_dir))
        atomic_write_text(html_path, self.to_html())
        return md_path, html_path
