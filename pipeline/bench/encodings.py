"""The teacher cache at many classes: bytes per image and loader samples/s of each encoding
(every logit or the top-k; float16 or int8 features) at several view counts, on a data set
of C classes generated on the spot (noise images) with a random-init teacher. Accuracy is
not the point here, sizes and speeds are; what top-k costs in accuracy is measured on
Stanford 40 (configs/stanford40-cache.cfg).

    python -m pipeline.bench.encodings --classes 1000 --views 8 32 --json cache-bench.json
    python -m pipeline.bench.encodings --gap work/stanford40/cache-*/cache.zarr --topk 1 5 10

Every ratio compares two measurements of this one run: each encoding against today's
format (every logit, float16 features) at the same views; loader epochs interleaved.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import deque
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cache.compact import FEATURE_DTYPES, topk_decode, topk_encode
from cache.reader import TeacherCache
from cache.storage.files import atomic_write_json
from pipeline.bench.fixtures import noise_store, random_teacher
from pipeline.bench.harness import bytes_on_disk, calibration, interleave, log_step, metric, seconds, table
from pipeline.data.imagestore import ImageStore
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher
from pipeline.training.loader import TrainLoader

FULL = (0, "float16")  # today's format: every logit, float16 features
GOALS = {"bytes_over_full": ("<=", 0.10), "loader_over_full": (">=", 1.0)}


def cache_name(views: int, topk: int, feature_dtype: str) -> str:
    """The name of a cache of `views` views per image, `topk` logits (0: all) and `feature_dtype` features."""
    return f"V{views}-{'k' + str(topk) if topk else 'all'}-{feature_dtype}"


def topk_gap(cache: TeacherCache, ks: list[int], temperatures: list[float]) -> dict:
    """How far the distribution rebuilt from the top-k is from the teacher's own, over the
    cached training views of a full cache: median and 95th percentile of their total
    variation and of KL(full || rebuilt), per K and temperature."""
    logits = cache.aug_logits.take(np.arange(len(cache.aug_rows))).astype(np.float32)
    logits = logits.reshape(-1, logits.shape[-1])
    out = {}
    for k in ks:
        rebuilt = torch.as_tensor(topk_decode(*topk_encode(logits, k), logits.shape[-1]))
        for t in temperatures:
            full, approx = (torch.log_softmax(torch.as_tensor(x, dtype=torch.float64) / t, -1)
                            for x in (logits, rebuilt))
            tv = 0.5 * (full.exp() - approx.exp()).abs().sum(-1)
            kl = (full.exp() * (full - approx)).sum(-1)
            out[f"K{k} T{t:g}"] = {f"{name} {q}": float(np.percentile(v.numpy(), p))
                                   for name, v in (("tv", tv), ("kl", kl)) for q, p in (("median", 50), ("p95", 95))}
    return out


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Every encoding's cache of a data set made in `workdir`, at each view count: its bytes
    per image and teacher pass, its loader's epochs interleaved, and the metrics against today's."""
    torch.set_num_threads(args.threads)
    store_path = noise_store(workdir, args.classes, args.per_class, args.image_size, args.seed)
    store = ImageStore(store_path)
    teacher = random_teacher(args.teacher, args.classes, args.seed, workdir / "teacher.safetensors")
    encodings = [FULL, *((k, d) for k in args.topk for d in args.features if (k, d) != FULL)]
    caches, result = {}, {"caches": {}, "metrics": {}}
    for views in args.views:
        for topk, dtype in encodings:
            name = cache_name(views, topk, dtype)
            job = TeacherJob(store=str(store_path), out=str(workdir / f"{name}.zarr"), model=args.teacher,
                             kwargs_json="{}", weights=str(workdir / "teacher.safetensors"), classes=args.classes,
                             image_size=args.image_size, views=views, seed=args.seed, batch_size=256,
                             threads=args.threads, topk=topk, feature_dtype=dtype)
            tic = time.perf_counter()
            cache_teacher(job, store.rows("train"), len(store.labels), teacher.num_features,
                          {"identity": {"views": views, "topk": topk, "feature_dtype": dtype}})
            caches[name] = TeacherCache(job.out)
            pass_seconds = time.perf_counter() - tic
            result["caches"][name] = {"views": views, "topk": topk, "feature_dtype": dtype,
                                      "pass_seconds": pass_seconds,
                                      "pass_forwards_per_s": (len(store.labels) + views * len(store.rows("train")))
                                      / pass_seconds,
                                      "bytes_per_image": bytes_on_disk(Path(job.out)) / len(store.labels)}
            log_step(f"{name}: {result['caches'][name]['bytes_per_image']:.0f} bytes per image")
    loaders = {name: TrainLoader(store, args.image_size, args.batch_size, args.seed, cache=cache)
               for name, cache in caches.items()}
    def epochs(loader: TrainLoader) -> float:
        return seconds(lambda: [deque(loader.epoch(e), maxlen=0) for e in range(args.loader_epochs)])

    timings = interleave(args.reps, **{name: partial(epochs, loader) for name, loader in loaders.items()})
    samples = len(store.rows("train")) * args.loader_epochs
    for name, info in result["caches"].items():
        full = cache_name(info["views"], *FULL)
        info["loader_samples_per_s"] = float(np.median(samples / timings[name]))
        if name != full:
            result["metrics"][f"{name} bytes_over_full"] = metric(
                "bytes_over_full", info["bytes_per_image"] / result["caches"][full]["bytes_per_image"], GOALS)
            result["metrics"][f"{name} loader_over_full"] = metric(
                "loader_over_full", timings[full] / timings[name], GOALS)
    result["timings"] = {name: t.tolist() for name, t in timings.items()}
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or only --gap), print its results, optionally write JSON; returns the results."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.encodings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=2, help="training images per class (plus one test image)")
    parser.add_argument("--views", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--topk", type=int, nargs="+", default=[0, 10], help="0 = every logit")
    parser.add_argument("--features", nargs="+", default=list(FEATURE_DTYPES), choices=FEATURE_DTYPES)
    parser.add_argument("--teacher", default="convnext_atto", help="timm name, random init")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--loader-epochs", type=int, default=5, help="loader epochs per timed repetition")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0], help="for --gap")
    parser.add_argument("--gap", type=Path, help="only measure how far top-k targets are from the full "
                                                 "logits of this finished full cache, at each --topk")
    parser.add_argument("--json", type=Path, help="write every result and timing here")
    args = parser.parse_args(argv)
    if args.gap:
        gaps = topk_gap(TeacherCache(args.gap), [k for k in args.topk if k], args.temperatures)
        print("\n".join(f"{name}: " + ", ".join(f"{q} {v:.4f}" for q, v in g.items()) for name, g in gaps.items()))
        return gaps
    workdir = Path(tempfile.mkdtemp(prefix="kd-cache-bench-"))
    try:
        tic, figure = time.perf_counter(), calibration()
        result = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result |= {"settings": vars(args) | {"json": str(args.json)}, "calibration_img_per_s": figure,
               "wall_seconds": time.perf_counter() - tic}
    print("\n".join(f"{name}: {c['bytes_per_image']:.0f} bytes/image, loader {c['loader_samples_per_s']:.0f} "
                    f"samples/s, pass {c['pass_seconds']:.1f} s ({c['pass_forwards_per_s']:.0f} forwards/s)"
                    for name, c in result["caches"].items()))
    print(table(result["metrics"]))
    print(f"wall time {result['wall_seconds']:.0f} s, calibration {figure:.0f} img/s")
    if args.json:
        atomic_write_json(args.json, json.loads(json.dumps(result, default=str)), indent=1)
    return result


if __name__ == "__main__":
    main()
