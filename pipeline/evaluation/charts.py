"""The report's figures: accuracy, mAP and gains with their intervals per student, and
each run's validation curve. Axes fit the data (Stanford 40 students score 5-40%)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cache.storage.files import atomic_path  # noqa: E402

METRICS = (("top1", "top-1 accuracy"), ("mAP", "mAP"))
COLORS = {"baseline": "C0", "kd": "C1", "online": "C2"}  # a mode keeps its colour everywhere
PAIR_COLORS = ("C3", "C4", "C5")


def padded_range(values: list[float], pad: float = 0.12) -> tuple[float, float]:
    """Axis limits that hold every value and zero, with a margin: bars and gaps stay honest
    (they start at zero) without a fixed 0-100 axis that flattens small numbers."""
    low, high = min([0.0, *values]), max([0.0, *values])
    margin = pad * (high - low) or 1.0
    return (low - margin if low < 0 else 0.0), high + margin


def summary_figure(title: str, teacher: dict, students: list[dict], modes: list[str],
                   gains: dict[str, dict[tuple, tuple]], pairs: list[tuple[str, str]]) -> Figure:
    """Top row: top-1 and mAP per student, a bar per mode, the teacher as a line. Bottom row:
    the gains between modes in points with their 95% bootstrap intervals as error bars."""
    names = [s["name"] for s in students]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    for col, (key, label) in enumerate(METRICS):
        values = [[100 * s["runs"][m]["metrics"][key] if m in s["runs"] else float("nan") for s in students]
                  for m in modes]
        _bars(axes[0, col], names, values, modes, [COLORS[m] for m in modes], f"{label} (%)")
        axes[0, col].axhline(100 * teacher["metrics"][key], color="k", ls="--", lw=1,
                             label=f"teacher ({teacher['model']})")
        axes[0, col].set_ylim(*padded_range([v for row in values for v in row if v == v]
                                            + [100 * teacher["metrics"][key]]))
        _gain_bars(axes[1, col], names, [[gains[n].get((*p, key)) for n in names] for p in pairs],
                   [f"{a} - {b}" for a, b in pairs], f"{label} gain (points)")
    _legend_below(fig)
    fig.suptitle(title)
    return fig


def _legend_below(fig: Figure) -> None:
    """One legend for all panels, outside the axes so that it hides no bar or line."""
    handles = {h.get_label(): h for ax in fig.axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=max(1, min(6, len(handles))),
               fontsize=8)


def _bars(ax, names: list[str], values: list[list[float]], labels: list[str], colors: list[str],
          ylabel: str, intervals: list | None = None) -> None:
    """Grouped bars: one group per name, one bar per series; intervals: (lows, highs) per
    series, each drawn from its low to its high whether or not it holds the bar's top (a
    percentile interval need not hold its point)."""
    width = 0.8 / max(1, len(values))
    for i, (row, label, color) in enumerate(zip(values, labels, colors)):
        x = [j + (i - (len(values) - 1) / 2) * width for j in range(len(names))]
        ax.bar(x, row, width, label=label, color=color)
        if intervals is not None:
            low, high = np.asarray(intervals[i], dtype=float)
            ax.errorbar(x, (low + high) / 2, (high - low) / 2, fmt="none", ecolor="k", capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_xlim(-0.5, len(names) - 0.5)  # a group whose bars are all missing keeps its place
    ax.set_ylabel(ylabel)


def _gain_bars(ax, names: list[str], cells: list[list[tuple | None]], labels: list[str], ylabel: str) -> None:
    """Gains in points as bars with their intervals; a pair a student lacks is left empty."""
    nan = float("nan")
    points = [[100 * c[0] if c else nan for c in row] for row in cells]
    intervals = [[[100 * c[end] if c else nan for c in row] for end in (1, 2)] for row in cells]
    _bars(ax, names, points, labels, PAIR_COLORS[:len(labels)], ylabel, intervals)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(*padded_range([100 * v for row in cells for c in row if c for v in c[1:]]))


def curves_figure(title: str, teacher: dict, students: list[dict]) -> Figure:
    """One panel per student: validation top-1 per epoch for each run, the teacher's for
    reference, so a reader sees which runs were still learning when training stopped."""
    cols = min(3, max(1, len(students)))
    rows = -(-max(1, len(students)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows + 0.6), layout="constrained",
                             squeeze=False, sharey=True)
    top = []
    for ax in axes.flat[len(students):]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, students):
        for mode, run in s["runs"].items():
            top += _curve(ax, run.get("history", []), mode, {"color": COLORS[mode]})
        top += _curve(ax, teacher.get("history", []), f"teacher ({teacher['model']})", {"color": "k", "ls": "--"})
        ax.set_title(s["name"])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel("validation top-1 (%)")
    axes[0, 0].set_ylim(*padded_range(top))  # shared by every panel
    _legend_below(fig)
    fig.suptitle(title)
    return fig


def _curve(ax, history: list[dict], label: str, style: dict) -> list[float]:
    """Plot one history's val_top1 (%) per epoch; return the values (none if never validated)."""
    points = [(h["epoch"], 100 * h["val_top1"]) for h in history if "val_top1" in h]
    if points:
        ax.plot(*zip(*points), marker=".", label=label, **style)
    return [v for _, v in points]


def cache_figure(title: str, study_rows: list[dict], names: list[str], column: str) -> Figure:
    """The cache study as points: per student, kd top-1 against the cache's bytes per image,
    one point per cache, the main cache as a star; a cache's bar is the 95% interval of its
    gain over the main cache, added to the main cache's top-1. Each cache is numbered beside
    the first student's point and named in a key, as names written beside the points overlap
    where caches cost nearly the same. `column`: the table's name of top-1 (a row holds
    "<student> <column>" and "<student> <column> gain")."""
    fig, ax = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
    for i, name in enumerate(names):
        color = f"C{i}"
        for number, row in enumerate(study_rows, 1):
            top1, gain = row.get(f"{name} {column}"), row.get(f"{name} {column} gain")
            if top1 is None:
                continue
            if i == 0:
                ax.annotate(str(number), (row["bytes/image"], float(top1)), fontsize=8, xytext=(4, 3),
                            textcoords="offset points")
            if gain is None:  # the main cache: the reference of every gain
                ax.plot(row["bytes/image"], float(top1), marker="*", ms=13, color=color, ls="none")
                continue
            # Drawn from end to end: a percentile interval need not hold its point.
            reference = float(top1) - gain[0]
            ax.vlines(row["bytes/image"], reference + gain[1], reference + gain[2], color=color)
            ax.plot(row["bytes/image"], float(top1), marker="o", color=color, ls="none")
        ax.plot([], [], marker="o", color=color, ls="none", label=name)
    ax.plot([], [], marker="*", ms=11, color="gray", ls="none", label="main cache")
    ax.set_xscale("log")
    ax.margins(x=0.1)
    ax.set_xlabel("cache bytes per image (log)")
    ax.set_ylabel("kd top-1 (%)")
    _legend_below(fig)
    key = [f"{number}  {row['logits']}, V {row['views']}" for number, row in enumerate(study_rows, 1)]
    fig.legend([plt.Line2D([], [], ls="none")] * len(key), key, loc="outside right center", fontsize=7,
               handlelength=0, title="caches", title_fontsize=8)
    fig.suptitle(f"{title}: what the cache keeps")
    return fig


def save_png(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
