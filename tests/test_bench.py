"""The benchmark's plumbing on a tiny size: every metric present, positive and finite, and
the JSON written. Speeds are measured by running the benchmark, never asserted here."""
import ast
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from support.slow_runs import encoding

from cache.reader import TeacherCache
from pipeline.bench import cache_vs_online as bench
from pipeline.bench import encodings as bench_cache
from pipeline.bench import loader as bench_loader
from pipeline.bench import store as bench_store
from pipeline.bench.costs import cost_table
from pipeline.data.imagestore import ImageStore
from pipeline.teacher.teacher_pass import cache_teacher

BENCHMARKS = ("cache_vs_online", "loader", "store", "encodings", "scale", "report")
KEYS = {"teacher_pass_ratio", "cached_kd_overhead", "online_over_cached", "online_over_cached_theory",
        "online_fraction_of_theory", "loader_headroom", "cache_bytes_per_image", "cache_bytes_raw_fp16",
        "cache_bytes_over_raw_fp16", "students_from_one_pass", "peak_rss_growth_teacher_pass",
        "peak_rss_growth_cached_epoch", "bf16_speedup", "ddp_epoch_ratio"}


def test_no_benchmark_imports_another():
    """Each benchmark is a command of its own: what they share lives in harness, fixtures and runs."""
    for name in BENCHMARKS:
        tree = ast.parse(Path(bench.__file__).with_name(f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {f"pipeline.bench.{other}" for other in BENCHMARKS}, name


@pytest.mark.slow
def test_bench_reports_every_ratio(tmp_path):
    out = tmp_path / "bench.json"
    result = bench.main(["--per-class", "4", "--image-size", "32", "--batch-size", "8",
                         "--teacher-batch-size", "16", "--views", "2", "--reps", "1", "--epochs", "1",
                         "--shard-rows", "16", "--threads", "1", "--device", "cpu", "--precision", "bf16",
                         "--students",
                         "vit_tiny_patch16_224 img_size=32 patch_size=8 embed_dim=32 depth=1 num_heads=2",
                         "--json", str(out)])
    assert set(result["metrics"]) == KEYS
    for name, m in result["metrics"].items():
        assert m["min"] <= m["median"] <= m["max"], name
        assert m["median"] > 0 and math.isfinite(m["median"]), name
    saved = json.loads(out.read_text())
    assert saved["metrics"].keys() == result["metrics"].keys()
    assert saved["settings"]["views"] == 2 and saved["machine"]["torch"]
    assert saved["machine"]["calibration_img_per_s"] > 0
    assert (saved["machine"]["device"], saved["machine"]["precision"]) == ("cpu", "bf16")


def test_bench_measures_what_it_is_asked_with_the_recipe(tmp_path):
    result = bench.main(["--per-class", "4", "--image-size", "32", "--batch-size", "8", "--teacher-batch-size", "16",
                         "--views", "2", "--reps", "1", "--shard-rows", "16", "--threads", "1", "--device", "cpu",
                         "--students", "vit_tiny_patch16_224 img_size=32 patch_size=8 embed_dim=32 depth=1 num_heads=2",
                         "--measure", "training", "--randaugment", "2,5", "--mixup", "0.8", "--cutmix", "1.0"])
    assert set(result["metrics"]) == {"cached_kd_overhead", "online_over_cached", "online_over_cached_theory",
                                      "online_fraction_of_theory", "loader_headroom"}
    assert result["metrics"]["loader_headroom"]["goal"] == ">= 3"
    assert result["settings"]["randaugment"] == "2,5" and result["settings"]["mixup"] == 0.8


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="this machine has a CUDA GPU")
def test_bench_refuses_an_absent_device_before_any_work(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda"])
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err


def test_cache_bench_sizes_every_encoding(tmp_path):
    """Every encoding at each view count, its bytes and loader speed; the compact ones smaller."""
    out = tmp_path / "cache-bench.json"
    specs = {f"feature_dtype={d} topk=5" for d in ("float16", "int8", "int4", "none")} | {
        "feature_dtype=int8", "feature_dtype=int4", "feature_dtype=none logit_dtype=int8",
        "feature_dtype=none logit_dtype=int4", "feature_dtype=none samples=8 tail=sampled topk=5",
        "feature_dtype=none samples=8 tail=sampled"}
    result = bench_cache.main(["--classes", "300", "--per-class", "1", "--views", "2", "--caches", *sorted(specs),
                               "--reps", "1", "--threads", "1", "--json", str(out)])
    caches = result["caches"]
    assert sorted(caches) == sorted(f"V2 {c}" for c in {bench_cache.FULL, *specs})
    size = {name.removeprefix("V2 "): c["bytes_per_image"] for name, c in caches.items()}
    top5 = [size[f"feature_dtype={d} topk=5"] for d in ("none", "int4", "int8", "float16")]
    assert top5 == sorted(top5) and top5[-1] < size[bench_cache.FULL]
    assert size["feature_dtype=int4"] < size["feature_dtype=int8"] < size[bench_cache.FULL]
    assert size["feature_dtype=none logit_dtype=int4"] < size["feature_dtype=none logit_dtype=int8"] \
        < size[bench_cache.FULL]
    assert size["feature_dtype=none topk=5"] < size["feature_dtype=none samples=8 tail=sampled topk=5"] \
        < size["feature_dtype=none logit_dtype=int8"]
    assert all(c["loader_samples_per_s"] > 0 for c in caches.values())
    assert json.loads(out.read_text())["metrics"].keys() == result["metrics"].keys()


def test_coding_gap_is_zero_at_every_class_and_grows_as_k_falls(tiny_data):
    cache = TeacherCache(tiny_data["cache"])
    classes = cache.aug_logits.shape[-1]
    specs = [f"topk={k}" for k in (1, 3, classes)] + ["topk=1 tail=tempered", "logit_dtype=int8"]
    gaps = bench_cache.coding_gap(cache, specs, 4.0)
    assert sorted(gaps) == sorted(["top-1, flat tail T4", "top-3, flat tail T4", f"top-{classes}, flat tail T4",
                                   "top-1, tail at T 4 T4", "every class, int8 T4"])
    assert set(gaps[f"top-{classes}, flat tail T4"].values()) == {0}
    assert all(0 <= g["error top10"] <= g["error"] * (1 + 1e-9) for g in gaps.values())
    assert gaps["top-1, flat tail T4"]["tv median"] > gaps["top-3, flat tail T4"]["tv median"] > 0
    # At T the tempered tail holds its true mass: nearer than the flat one rebuilt from its mass at 1.
    assert gaps["top-1, tail at T 4 T4"]["kl median"] < gaps["top-1, flat tail T4"]["kl median"]
    assert 0 < gaps["every class, int8 T4"]["kl p95"] < 1e-3


def test_coding_gap_of_logits_from_the_features_is_measured_from_a_cache_of_them(tiny_data, tmp_path):
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path / "head.zarr"),
                              **encoding("logit_dtype=head feature_dtype=float16"))
    store = ImageStore(tiny_data["store"])
    cache_teacher(job, store.rows("train"), len(store.labels), 320, {"identity": tiny_data["identity"]},
                  "synchronous", 1, 16)
    specs = ["logit_dtype=head feature_dtype=float16", "logit_dtype=head feature_dtype=int8",
             "logit_dtype=head feature_dtype=int4", "logit_dtype=int4"]
    gaps = bench_cache.coding_gap(TeacherCache(job.out), specs, 4.0)
    head = "every class, head on {} features T4"
    assert gaps[head.format("float16")]["kl p95"] < 1e-9  # the reference itself, up to float sums
    assert 0 < gaps[head.format("int8")]["kl p95"] < gaps[head.format("int4")]["kl p95"] < 1e-2
    assert gaps["every class, int4 T4"]["kl p95"] > 0
    assert bench_cache.coding_gap(TeacherCache(tiny_data["cache"]), specs[1:], 4.0).keys() == {"every class, int4 T4"}


def test_store_bench_sizes_raw_and_jpeg(tmp_path):
    results = bench_store.main(["--source", "synthetic", "--options", "train_per_class=2", "test_per_class=1",
                                "size=48", "--sizes", "32", "--batch", "4", "--seconds", "0.05", "--threads", "1",
                                "--json", str(tmp_path / "store.json")])
    raw, jpeg = results
    assert (raw["format"], jpeg["format"]) == ("raw", "jpeg q90") and raw["images"] == jpeg["images"] == 24
    assert 0 < jpeg["bytes_per_image"] < raw["bytes_per_image"]
    assert all(r["img_per_s_disk"] > 0 and r["img_per_s_memory"] > 0 for r in results)


@pytest.mark.slow
def test_loader_bench_measures_every_path_at_each_size(tmp_path):
    out = tmp_path / "loader.json"
    result = bench_loader.main(["--images", "300", "600", "--classes", "10", "--size", "16", "--views", "2",
                                "--samples", "64", "--steps", "1", "--reps", "1", "--threads", "1", "--chunk-rows", "4",
                                "--out", str(tmp_path / "data"), "--json", str(out)])
    paths = {f"{fmt}_{way}" for fmt in ("raw", "jpeg") for way in ("disk_random", "disk_shards", "c4_disk_shards")}
    for r in result["results"].values():
        assert all(r[name] > 0 for name in {*paths, "raw_memory_random", "student_step"})
        assert len(r["peak_rss_shards"]) == 1 and r["bytes_on_disk"]["cache"] > 0
    assert json.loads(out.read_text())["results"].keys() == {"300", "600"}


def test_cost_table_shows_each_task_per_run_and_its_per_image_growth():
    def cost(seconds, cpu):
        return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": 500.0, "children_peak_rss_mb": 700.0,
                "bytes": 2e6}
    small = (1_000, {"TrainStudent kd vit": {**cost(10.0, 15.0), "start_rss_mb": 380.0}})
    large = (10_000, {"TrainStudent kd vit": {**cost(120.0, 150.0), "runs": 3}, "Report": cost(5.0, 5.0)})
    header, _, train, report = cost_table([small, large]).splitlines()
    assert header.startswith("| task | s @ 1,000 | CPU s | img/s | peak MB | disk MB | s @ 10,000 |")
    assert train == ("| TrainStudent kd vit | 10.0 | 15.0 | 100 | 700 (+120) | 2.0 | 120.0 (3 runs) | 150.0 | 83 | 700 "
                     "| 2.0 | 1.20x (1.00x) |")
    assert report == "| Report |  |  |  |  |  | 5.0 | 5.0 | 2,000 | 700 | 2.0 |  |"
