"""A cache study over training seeds: each cache's gain seed by seed, its mean and the
Student's t interval of the mean."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from pipeline.evaluation.seeds import main, mean_interval, seed_gains, t_quantile

COLUMNS = ["views", "logits", "features", "bytes/image", "vit acc", "vit mAP", "vit acc gain", "vit mAP gain"]


def write_study(folder, main_acc: float, int8_gain: float, rank_gain: float | None) -> None:
    folder.mkdir()
    rows = [["8", "every class, float16", "none", "2585", main_acc, main_acc + 9, "", ""],
            ["8", "every class, int8", "none", "1356", main_acc + int8_gain, 0, int8_gain, int8_gain / 2]]
    if rank_gain is not None:
        rows.append(["8", "every class, int8 in rank 192", "none", "500", main_acc + rank_gain, 0, rank_gain, 0])
    with open(folder / "caches.csv", "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, *rows])


def test_t_quantiles_are_the_tables():
    assert [round(t_quantile(0.975, dof), 3) for dof in (1, 2, 4, 30)] == [12.706, 4.303, 2.776, 2.042]


def test_each_cache_s_gain_over_seeds_with_its_t_interval(tmp_path):
    gains = [1.7, -0.1, -0.6]
    for seed, (acc, gain) in enumerate(zip([74.3, 76.7, 69.4], gains)):
        write_study(tmp_path / f"seed{seed}", acc, gain, rank_gain=None if seed == 2 else 0.5)
    rows = seed_gains(sorted(tmp_path.iterdir()))
    # The rank cache is missing from one seed's study: only the caches all of them scored.
    assert [(r["cache"][1], r["metric"]) for r in rows] == [("every class, int8", "acc"), ("every class, int8", "mAP")]
    acc = rows[0]
    assert acc["gains"] == gains and acc["main"] == [74.3, 76.7, 69.4]
    half = 4.303 * np.std(gains, ddof=1) / math.sqrt(3)
    assert acc["mean"] == pytest.approx(np.mean(gains))
    assert (acc["low"], acc["high"]) == pytest.approx((np.mean(gains) - half, np.mean(gains) + half), abs=1e-3)
    assert rows[1]["gains"] == [g / 2 for g in gains]


def test_one_seed_has_no_interval_and_a_folder_without_a_study_is_named(tmp_path, capsys):
    assert all(math.isnan(x) for x in mean_interval(np.array([1.0])))
    write_study(tmp_path / "seed0", 74.3, 1.7, 0.5)
    main([str(tmp_path / "seed0")])
    printed = capsys.readouterr().out
    assert "| 8, every class, int8 in rank 192, none | vit | acc | 74.3 | +0.5 | +0.5 [+nan, +nan] |" in printed
    with pytest.raises(FileNotFoundError, match="nowhere/caches.csv is missing"):
        seed_gains([tmp_path / "nowhere"])
