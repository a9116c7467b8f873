"""The training loader reading from disk: samples/s of a kd loader (images and the teacher
cache's replayed views) over an image store and cache read from disk (memory budget 0) in
random order and in shards order ([train] order; made by the loader's thread, or by
--read-processes processes, e.g. 1 2 to see them scale), against the same loader in memory
and a student's training step, at one or more data set sizes; peak memory of the shards
order at each size.

    python -m pipeline.bench.loader --images 20000 200000 --classes 1000 --size 32 --out /tmp/bl

The store (noise images; raw and jpeg) and a cache of random outputs in the teacher
cache's layout are built under --out once per size and reused. Every ratio compares two
measurements of this one run; repetitions interleaved, medians reported.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr

from cache.reader import TeacherCache
from cache.schema import LogitCoding, create_cache, encode_outputs
from cache.storage import blocks
from cache.storage.files import atomic_write_json
from pipeline.bench.fixtures import noise_store
from pipeline.bench.harness import (
    bytes_on_disk,
    calibration,
    in_fresh_process,
    interleave,
    log_step,
    peak_rss,
    seconds,
    shipped_config,
)
from pipeline.bench.runs import Settings, StudentRun
from pipeline.data.hdf5 import HDF5Source
from pipeline.data.imagestore import ImageStore, write_image_store
from pipeline.spec import parse_spec
from pipeline.training.loader import TrainLoader

MEMORY = 1 << 40  # a memory budget every array fits
SHARD_ROWS = 256  # of the store (write_image_store's default, as bench_cache writes it) and the cache


def make_stores(root: Path, args: argparse.Namespace, images: int) -> dict[str, Path]:
    """Image stores of `images` noise images (bench_cache's), reused when finished: raw and
    jpeg, one image a chunk, and with --chunk-rows images a chunk (named raw_cK, jpeg_cK)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {"raw": root / "store.zarr"}
    if blocks.read_manifest(paths["raw"]) is None:
        noise_store(root, args.classes, images // args.classes - 1, args.size, args.seed)
    source = HDF5Source(root / "images.h5")
    for name, quality, chunk_rows in (("jpeg", args.quality, 1), (f"raw_c{args.chunk_rows}", None, args.chunk_rows),
                                      (f"jpeg_c{args.chunk_rows}", args.quality, args.chunk_rows)):
        if chunk_rows == 1 and name != "jpeg":
            continue
        paths[name] = root / f"store-{name}.zarr"
        if blocks.read_manifest(paths[name]) is None:
            write_image_store(source, source.items(), paths[name], args.size, {"source": "generated"},
                              workers=args.threads, shard_rows=SHARD_ROWS, jpeg_quality=quality,
                              chunk_rows=chunk_rows)
    return paths


def make_cache(path: Path, store: ImageStore, args: argparse.Namespace) -> Path:
    """A finished teacher cache of random outputs for `store`, in the teacher pass's layout
    and encoding (cache/schema.py), a shard at a time; reused when finished."""
    if blocks.read_manifest(path) is not None:
        return path
    rows, n, v, c, d = store.rows("train"), len(store.labels), args.views, args.classes, args.feature_dim
    group = create_cache(path, n, rows, v, c, d, SHARD_ROWS, {"identity": {"views": v}},
                         coding=LogitCoding(topk=args.topk), feature_dtype=args.features)
    rng = np.random.default_rng(args.seed)
    for split, count, lead in (("eval", n, ()), ("aug", len(rows), (v,))):
        for start in range(0, count, SHARD_ROWS):
            shape = (min(SHARD_ROWS, count - start), *lead)
            outputs = encode_outputs(rng.normal(size=(*shape, c)).astype(np.float32),
                                     rng.normal(size=(*shape, d)).astype(np.float32), {}, LogitCoding(topk=args.topk),
                                     args.features)
            for name, array in outputs.items():
                group[f"{split}/{name}"][start:start + shape[0]] = array
            if split == "aug":
                group["aug/params"][start:start + shape[0]] = random_boxes(rng, shape, args.size)
    blocks.finish(path, {"identity": {"views": v}})
    return path


def random_boxes(rng: np.random.Generator, shape: tuple, size: int) -> np.ndarray:
    """(*shape, 5) valid views (y, x, h, w, flip) of a size-px image."""
    h, w = rng.integers(size // 2, size + 1, (2, *shape))
    y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    return np.stack([y, x, h, w, rng.integers(0, 2, shape)], -1).astype(np.float32)


def serve(loader: TrainLoader, samples: int, epoch: int) -> float:
    """Seconds for `loader` to serve `samples` samples from `epoch` on, into the next epochs
    where one holds fewer (stopping inside an epoch costs the read processes' windows under way)."""
    def run() -> None:
        served = 0
        for batch in itertools.chain.from_iterable(map(loader.epoch, itertools.count(epoch))):
            served += len(batch.labels)
            if served >= samples:
                return
    return seconds(run)


def loaders(paths: dict[str, Path], cache: Path, args: argparse.Namespace) -> dict[str, Callable[[], TrainLoader]]:
    """The loaders compared, by name: each format in random order from disk (one image a
    chunk: the default before [train] order = auto) and in shards order from disk, with one
    image a chunk and --chunk-rows, made by the loader's thread and by each count of
    --read-processes (name suffix _pN); raw in random order from memory."""
    def make(store: str, budget: int, order: str, processes: int = 0) -> Callable[[], TrainLoader]:
        return lambda: TrainLoader(ImageStore(paths[store], budget), args.size, args.batch_size, args.seed,
                                   TeacherCache(cache, budget), order=order, window=args.window,
                                   read_processes=processes)
    out = {}
    for fmt in args.formats:
        out[f"{fmt}_disk_random"] = make(fmt, 0, "random")
        for store in [fmt, *([f"{fmt}_c{args.chunk_rows}"] if args.chunk_rows > 1 else [])]:
            for processes in [0, *args.read_processes]:
                out[f"{store}_disk_shards" + (f"_p{processes}" if processes else "")] = make(store, 0, "shards",
                                                                                           processes)
    out["raw_memory_random"] = make("raw", MEMORY, "random")
    return out


def serving_peak_rss(paths: dict[str, Path], cache: Path, args: argparse.Namespace) -> dict:
    """Resident MB before, and the peak above it while serving `samples` in shards order from
    disk, read by this process."""
    torch.set_num_threads(args.threads)
    loader = loaders(paths, cache, args)[f"{args.formats[0]}_disk_shards"]()
    memory = peak_rss(lambda: serve(loader, args.samples, 0))
    return {"before_mb": memory["before_mb"], "work_mb": memory["work_mb"]}


def shipped_student(size: int) -> str:
    """luigi.cfg's vit (whose kwargs are numbers) taking `size` px images."""
    name, kwargs = parse_spec(shipped_config()["students"]["vit"])
    return " ".join([name, *(f"{key}={value}" for key, value in {**kwargs, "img_size": size}.items())])


def student_samples_per_s(paths: dict[str, Path], cache: Path, args: argparse.Namespace) -> float:
    """A kd student's training samples/s on one in-memory batch (pipeline.bench.runs's StudentRun.steps)."""
    s = Settings(image_size=args.size, batch_size=args.batch_size, threads=args.threads, seed=args.seed,
                 device="cpu", precision="fp32")
    store, teacher = ImageStore(paths["raw"], MEMORY), TeacherCache(cache, MEMORY)
    batch = next(TrainLoader(store, args.size, args.batch_size, args.seed, teacher).epoch(0))
    run = StudentRun(s, args.student or shipped_student(args.size), store, "kd", 1, teacher)
    run.steps(batch, 2)  # warm-up
    return args.batch_size / float(np.median([run.steps(batch, args.steps) for _ in range(args.reps)]))


def measure(images: int, args: argparse.Namespace) -> dict:
    """At `images` images: every loader's samples/s, the student's step, the shards order's
    peak memory and each store's and the cache's bytes on disk."""
    root = args.out / f"{images}-{args.classes}c-{args.size}px"
    paths = make_stores(root, args, images)
    cache = make_cache(root / f"cache-V{args.views}-k{args.topk}-{args.features}.zarr",
                       ImageStore(paths["raw"], 0), args)
    log_step(f"{images} images: stores and cache ready in {root}")
    made = {name: make() for name, make in loaders(paths, cache, args).items()}
    for loader in made.values():
        serve(loader, 1, 1 << 20)  # untimed: the reading processes start
    runs = {name: (lambda loader=loader, rep=iter(range(1 << 30)): serve(loader, args.samples, next(rep)))
            for name, loader in made.items()}
    timings = interleave(args.reps, **runs)
    result = {name: args.samples / float(np.median(t)) for name, t in timings.items()}
    result["student_step"] = student_samples_per_s(paths, cache, args)
    result["peak_rss_shards"] = [in_fresh_process(serving_peak_rss, paths, cache, args) for _ in range(args.reps)]
    result["bytes_on_disk"] = {name: bytes_on_disk(p) for name, p in {**paths, "cache": cache}.items()}
    result["timings"] = {name: t.tolist() for name, t in timings.items()}
    return result


def report(results: dict[int, dict], args: argparse.Namespace) -> str:
    """The results as text: speeds at each size, their ratios, and how they change with size."""
    lines = []
    for images, r in results.items():
        lines.append(f"{images} images: " + ", ".join(f"{name} {r[name]:,.0f}" for name in
                                                      [*[k for k in r if "_disk_" in k or "_memory_" in k],
                                                       "student_step"]) + " samples/s")
        for name in [k for k in r if "_disk_shards" in k]:
            shards, today = r[name], r[name.split("_")[0] + "_disk_random"]
            lines.append(f"  {name}: / random order from disk {shards / today:.1f}x, "
                         f"/ student step {shards / r['student_step']:.2f}x, "
                         f"/ memory {shards / r['raw_memory_random']:.2f}x")
            if len(args.read_processes) > 1 and name.endswith(f"_p{args.read_processes[-1]}"):
                fewest = name.replace(f"_p{args.read_processes[-1]}", f"_p{args.read_processes[0]}")
                lines.append(f"  {name} / {fewest}: {shards / r[fewest]:.2f}x")
        rss = [m["work_mb"] for m in r["peak_rss_shards"]]
        lines.append(f"  peak RSS above baseline, shards order: {np.median(rss):.0f} MB (median of {rss})")
    sizes = sorted(results)
    if len(sizes) > 1:
        small, big = results[sizes[0]], results[sizes[-1]]
        for key in [k for k in small if "_disk_" in k]:
            lines.append(f"{key} at {sizes[-1]} / at {sizes[0]} images: {big[key] / small[key]:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark at each size, print its report, optionally write JSON; returns the results."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[20000], help="data set sizes")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32, help="stored and input image side")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--topk", type=int, default=0, help="cached top-k logits; 0 = every logit")
    parser.add_argument("--features", default="float16", help="cached feature dtype")
    parser.add_argument("--feature-dim", type=int, default=320, help="convnext_atto's")
    parser.add_argument("--formats", nargs="+", default=["raw", "jpeg"], choices=["raw", "jpeg"])
    parser.add_argument("--quality", type=int, default=90, help="of the jpeg store")
    parser.add_argument("--window", type=int, default=4, help="[train] order_window")
    parser.add_argument("--read-processes", type=int, nargs="*", default=[2],
                        help="[compute] read_processes counts, each beside the loader's thread (none: only it)")
    parser.add_argument("--chunk-rows", type=int, default=16,
                        help="[data] chunk_rows of the stores read in shards order beside one image a chunk; 1 = none")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8192, help="served per timed repetition")
    parser.add_argument("--student", help="default: luigi.cfg's vit at --size")
    parser.add_argument("--steps", type=int, default=5, help="student steps per timed repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="folder of the generated data, kept for reuse")
    parser.add_argument("--json", type=Path, help="write every result and timing here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic, figure = time.perf_counter(), calibration()
    results = {images: measure(images, args) for images in args.images}
    print(report(results, args))
    after = calibration()
    print(f"calibration {figure:.0f} img/s before, {after:.0f} after; zarr async.concurrency "
          f"{zarr.config.get('async.concurrency')}; wall time {time.perf_counter() - tic:.0f} s")
    out = {"results": results, "settings": {**vars(args), "out": str(args.out), "json": str(args.json)},
           "calibration_img_per_s": [figure, after]}
    if args.json:
        atomic_write_json(args.json, json.loads(json.dumps(out, default=str)), indent=1)
    return out


if __name__ == "__main__":
    main()
