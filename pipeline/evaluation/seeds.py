"""A cache study's gains over training seeds: the same study run at several `[train] seed`s
(each a report with a caches.csv), each cache's gain over the main cache, seed by seed,
their mean and its 95% interval over the seeds (Student's t).

A report's own intervals are over test images: they say how sure one trained student's
score is, not what another training run would score. Where a student is sensitive to its
targets, any change of them (even int8's rounding) moves it by about what a seed moves it,
so whether a cache keeps the gain is a question over seeds:

    python -m pipeline.evaluation.seeds work/hard300/report-*/
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

METRICS = ("acc", "mAP")
KEY = ("views", "logits", "features")  # what tells a study's caches apart


def read_study(report: Path) -> dict[tuple, dict[str, str]]:
    """A report's caches.csv, its rows by (views, logits, features)."""
    path = report / "caches.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: give the folders of reports of a [cache_study]")
    with open(path, newline="") as f:
        return {tuple(row[k] for k in KEY): row for row in csv.DictReader(f)}


def seed_gains(reports: list[Path]) -> list[dict]:
    """Per cache other than the main one and per student every report scored it for: each
    seed's gain (points) of acc and mAP, their mean and 95% t-interval over the seeds, and
    the main cache's own kd score per seed ({"cache", "student", "metric", "gains", "mean",
    "low", "high", "main"})."""
    studies = [read_study(r) for r in reports]
    main = [next(row for row in study.values() if not any(v.endswith(" gain") and row[v] for v in row))
            for study in studies]
    out = []
    for key in (k for k in studies[0] if all(k in s for s in studies)):
        rows = [s[key] for s in studies]
        if any(row is m for row, m in zip(rows, main)):
            continue
        students = [c[:-len(" acc gain")] for c in rows[0]
                    if c.endswith(" acc gain") and all(row.get(c) for row in rows)]
        for student in students:
            for metric in METRICS:
                gains = np.array([float(row[f"{student} {metric} gain"]) for row in rows])
                low, high = mean_interval(gains)
                out.append({"cache": key, "student": student, "metric": metric, "gains": gains.tolist(),
                            "mean": float(gains.mean()), "low": low, "high": high,
                            "main": [float(m[f"{student} {metric}"]) for m in main]})
    return out


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The Student's t interval of the mean of `values` (nan, nan for fewer than two)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = t_quantile(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def t_quantile(p: float, dof: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with `dof` degrees of freedom: its density
    integrated (Simpson's rule) and the bound found by bisection; within 1e-6."""
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 4001)
        density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(t * t / dof))
        step = x / 4000
        return 0.5 + step / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    while high - low > 1e-7:
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def markdown(rows: list[dict]) -> str:
    """One line per cache, student and metric."""
    lines = ["| cache (views, logits, features) | student | metric | main cache's kd, per seed | "
             "gain per seed | mean gain [95% over seeds] |", "|---|---|---|---|---|---|"]
    for r in rows:
        per_seed = ", ".join(f"{g:+.1f}" for g in r["gains"])
        main = ", ".join(f"{m:.1f}" for m in r["main"])
        lines.append(f"| {', '.join(r['cache'])} | {r['student']} | {r['metric']} | {main} | {per_seed} | "
                     f"{r['mean']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluation.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="report folders of one cache study at several seeds")
    rows = seed_gains(parser.parse_args(argv).reports)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
