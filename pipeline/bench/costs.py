"""What each task of finished runs cost, as one markdown table: a row per task, and for each
run (a work folder, its data set at N images) the task's wall and CPU seconds (of every run
a task resumed after stops took), images/s (the data set's N over the wall seconds), peak
resident MB (its process's or a child's, from the cost.json every task leaves; in brackets,
how far its process rose above its start) and the MB its output folder holds; then how the
cost per image grew from the previous run's N to the last one's.

    python -m pipeline.bench.costs /work/scale/runs-200k /work/scale/runs-1.28M --dataset imagenet

Run RunAll with `--workers 2` or `--worker-force-multiprocessing` for peaks of each task's own.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.bench.harness import bytes_on_disk


def run_costs(work: Path, dataset: str) -> tuple[int, dict[str, dict]]:
    """The data set's image count in the run's store and, by task in the order they started,
    its cost.json with the output folder's bytes added."""
    folder = work / dataset
    manifests = sorted(folder.glob("store-*/store.zarr/manifest.json"))
    if not manifests:
        raise SystemExit(f"{folder}: no finished image store (store-*/store.zarr/manifest.json); "
                         "is it the [paths] work of a finished RunAll, and --dataset its data set?")
    images = json.loads(manifests[-1].read_text())["count"]
    costs = [{**json.loads(path.read_text()), "bytes": bytes_on_disk(path.parent)}
             for path in folder.glob("*/cost.json")]
    return images, {task_name(cost["task"], dataset): cost for cost in sorted(costs, key=lambda c: c["started"])}


def task_name(task_id: str, dataset: str) -> str:
    """Luigi's task id without the data set and the hash: 'TrainStudent kd vit'."""
    parts = task_id.split("_")
    return " ".join(part for part in parts[:-1] if part not in ("", dataset))


def cost_table(runs: list[tuple[int, dict[str, dict]]]) -> str:
    """The markdown table this module's doc describes, runs in the order given."""
    header = ["task"]
    for n, _ in runs:
        header += [f"s @ {n:,}", "CPU s", "img/s", "peak MB", "disk MB"]
    if len(runs) > 1:
        header.append("per-image s (CPU s), last / previous N")
    names = list(dict.fromkeys(name for _, costs in runs for name in costs))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        row = [name]
        for n, costs in runs:
            c = costs.get(name)
            stops = f" ({c['runs']} runs)" if c and c.get("runs", 1) > 1 else ""  # resumed after stops
            row += ([f"{c['seconds']:,.1f}{stops}", f"{c['cpu_seconds']:,.1f}" if "cpu_seconds" in c else "",
                     f"{n / c['seconds']:,.0f}", peak(c), f"{c['bytes'] / 1e6:,.1f}"] if c else [""] * 5)
        if len(runs) > 1:
            row.append(growth(name, *runs[-2:]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def peak(cost: dict) -> str:
    """The larger of the task's process's and its children's peaks, MB; and, where recorded,
    how far its process's peak rose above its resident memory at the start."""
    text = f"{max(cost['peak_rss_mb'], cost['children_peak_rss_mb']):,.0f}"
    return text + (f" (+{cost['peak_rss_mb'] - cost['start_rss_mb']:,.0f})" if "start_rss_mb" in cost else "")


def growth(name: str, before: tuple[int, dict[str, dict]], after: tuple[int, dict[str, dict]]) -> str:
    """How a task's seconds (and CPU seconds) an image grew from one run's N to the other's."""
    (n0, costs0), (n1, costs1) = before, after
    if name not in costs0 or name not in costs1:
        return ""
    ratio = {key: (costs1[name][key] / n1) / (costs0[name][key] / n0)
             for key in ("seconds", "cpu_seconds") if key in costs0[name] and key in costs1[name]}
    return f"{ratio['seconds']:.2f}x" + (f" ({ratio['cpu_seconds']:.2f}x)" if "cpu_seconds" in ratio else "")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("work", nargs="+", type=Path, help="[paths] work of finished RunAll runs, smallest N first")
    parser.add_argument("--dataset", required=True, help="the data set's name in [datasets]")
    args = parser.parse_args(argv)
    text = cost_table([run_costs(work, args.dataset) for work in args.work])
    print(text)
    return text


if __name__ == "__main__":
    main()
