"""The paper-style comparison: one row per student, accuracy and mAP without and with
distillation and the gain, the teacher on top; as Markdown, CSV and a PNG chart."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cache.blocks import atomic_write_text  # noqa: E402

COLUMNS = ["model", "timm name", "params (M)", "acc", "mAP", "acc KD", "mAP KD", "acc gain", "mAP gain"]


def table_rows(teacher: dict, students: list[dict]) -> list[list]:
    """teacher: {name, model, params, metrics}; students: {name, model, params, baseline, kd}
    where baseline/kd are metric dicts. Percentages with one decimal."""
    pct = lambda x: round(100 * x, 1)  # noqa: E731
    rows = [[teacher["name"], teacher["model"], round(teacher["params"] / 1e6, 2),
             pct(teacher["metrics"]["top1"]), pct(teacher["metrics"]["mAP"]), "", "", "", ""]]
    for s in students:
        b, k = s["baseline"], s["kd"]
        rows.append([s["name"], s["model"], round(s["params"] / 1e6, 2), pct(b["top1"]), pct(b["mAP"]),
                     pct(k["top1"]), pct(k["mAP"]), round(pct(k["top1"]) - pct(b["top1"]), 1),
                     round(pct(k["mAP"]) - pct(b["mAP"]), 1)])
    return rows


def write_report(out_dir: Path, title: str, notes: list[str], teacher: dict,
                 students: list[dict]) -> Path:
    """Write report.csv, report.png and, last, report.md; return the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(teacher, students)
    buf = io.StringIO()
    csv.writer(buf).writerows([COLUMNS, *rows])
    atomic_write_text(out_dir / "report.csv", buf.getvalue())
    _chart(out_dir / "report.png", title, teacher, students)
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    lines += ["", *notes, "", "![accuracy and mAP](report.png)", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    return out_dir / "report.md"


def _chart(path: Path, title: str, teacher: dict, students: list[dict]) -> None:
    names = [s["name"] for s in students]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, label in zip(axes, ("top1", "mAP"), ("top-1 accuracy (%)", "mAP (%)")):
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [100 * s["baseline"][key] for s in students], 0.4, label="baseline")
        ax.bar([i + 0.2 for i in x], [100 * s["kd"][key] for s in students], 0.4, label="KD from cache")
        ax.axhline(100 * teacher["metrics"][key], color="k", ls="--", lw=1, label=f"teacher ({teacher['model']})")
        ax.set_xticks(list(x), names, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.set_ylim(0, 100)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
