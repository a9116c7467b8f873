"""Scale by simulation: a generated image folder of N small JPEGs in C classes, and what
the pipeline pays at that N: listing and fingerprinting the folder, a no-op rerun of a
finished `RunAll` on it, building raw and jpeg image stores, the teacher pass, and the
peak memory of the last two, each in a fresh process. Run it at N and 10N: the times
should grow with N, the memory should not.

    python -m pipeline.bench.scale --images 200000 --classes 1000 --out /tmp/scale/n200k

`--layout imagenet` generates (or completes) a folder in ImageNet's layout and shape
instead (pipeline/bench/folders.py), `--folder` where; `--parts` picks what is measured
(the store builds and the teacher pass are hours at ImageNet's size).

Reruns reuse the folder, the finished experiment and the teacher's weights under --out.
The first run finishes the experiment once; at a thousand classes most of its time is
the report's mAP bootstrap over the test images, not the no-op it prepares.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import zarr

import models
from cache.storage.files import atomic_write_json
from pipeline.bench.fixtures import random_teacher
from pipeline.bench.folders import generate, generate_imagenet
from pipeline.bench.harness import (
    ROOT,
    bytes_on_disk,
    calibration,
    in_fresh_process,
    interleave,
    log_step,
    metric,
    peak_rss,
    seconds,
    shipped_config,
    table,
)
from pipeline.checks import check_dataset
from pipeline.data.imagefolder import ImageFolder
from pipeline.data.imagestore import ImageStore, write_image_store, write_rows
from pipeline.data.readers import carve_validation, shuffled_order
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher

TEACHER = "convnext_atto"
TINY_TEACHER = "convnext_atto depths=(1,1,1,1) dims=(8,16,32,64)"
TINY_STUDENT = "vit_tiny_patch16_224 img_size=32 patch_size=8 embed_dim=32 depth=1 num_heads=2"
GOALS = {"noop_runall_s": ("<=", 10.0)}
LAYOUTS = {"flat": ("images", generate), "imagenet": ("imagenet", generate_imagenet)}  # folder name, generator
NOTHING_TO_DO = "Did not run any tasks"  # Luigi's summary of a run that found everything done


def listing_metrics(folder: Path, reps: int) -> dict:
    """Seconds of what every command pays on the folder before any work: the source's
    listing as items (what the store build reads), the configuration check of the data set
    (a count of its images per split and class) and the fingerprint PrepareDataset computes
    (a stat of every file); each in a fresh process, as each command is (a process keeps its
    count)."""
    t = interleave(reps, **{part: partial(in_fresh_process, listing_seconds, part, folder)
                            for part in ("listing", "config_check", "fingerprint")})
    return {f"{name}_s": metric(f"{name}_s", values) for name, values in t.items()}


def listing_seconds(part: str, folder: Path) -> float:
    """Seconds of one of listing_metrics' parts, in this process."""
    run = {"listing": lambda: ImageFolder(folder).items(),
           "config_check": lambda: check_dataset("scale", f"imagefolder:{folder}"),
           "fingerprint": lambda: ImageFolder(folder).fingerprint()}[part]
    return seconds(run)


def experiment(out: Path, folder: Path, classes: int, holdout: float | None = None) -> Path:
    """A LUIGI_CONFIG_PATH file of a small experiment on the folder: a 32 px jpeg store, a
    tiny random-init teacher given as a checkpoint (no fine-tuning), no cached views, one
    tiny student, kd only, one epoch; `holdout` is the folder's test fraction, ImageFolder's
    default when None. Its cost is not the point; its finished graph is."""
    weights = out / "runall-teacher.safetensors"
    if not weights.exists():  # new weights would be a new teacher: the rerun would redo its cache
        random_teacher(TINY_TEACHER, classes, 0, weights)
    off = "".join(f"{name} =\n" for name in shipped_config()["students"])  # an empty spec switches a student off
    config = out / "experiment.cfg"
    options = "" if holdout is None else f" holdout={holdout}"  # unset, it leaves earlier experiments' spec alone
    config.write_text(f"[paths]\nwork = {out / 'work'}\n[datasets]\ndemo =\nscale = imagefolder:{folder}{options}\n"
                      f"[data]\nstore_size = 32\nimage_format = jpeg\n[compute]\nthreads = 2\n"
                      f"[teacher]\nmodel = {TINY_TEACHER}\ncheckpoint = {weights}\nviews = 0\n"
                      f"[students]\n{off}tiny = {TINY_STUDENT}\n"
                      f"[train]\nepochs = 1\nbatch_size = 256\nmodes = kd\n")
    return config


def timed_python(config: Path, *command: str) -> tuple[float, str]:
    """Wall seconds and output of `python COMMAND` with the experiment's configuration,
    started from the checkout as a user starts luigi; raises if it fails. The output goes
    to luigi.log beside the configuration as it comes, to follow a long first run."""
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = config.with_name("luigi.log")
    with log.open("w") as output:
        tic = time.perf_counter()
        done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - tic
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{log.read_text()[-3000:]}")
    return wall, log.read_text()


def timed_luigi(args: list[str]) -> str:
    """Python code that runs `python -m luigi ARGS` (luigi's __main__ calls luigi_run) and
    prints first how long its imports took."""
    return ("import time; tic = time.perf_counter(); import luigi.cmdline, tasks; "
            "print(f'imports took {time.perf_counter() - tic} s', flush=True); "
            f"luigi.cmdline.luigi_run({args!r})")


def run_all_args(config: Path) -> list[str]:
    """RunAll, with Luigi's one-run-at-a-time lock kept to this experiment: another RunAll on
    the machine would otherwise make this one exit at once."""
    return ["--module", "tasks", "RunAll", "--lock-pid-dir", str(config.with_name("luigi-pids"))]


def noop_metrics(config: Path, reps: int) -> tuple[dict, dict]:
    """The whole `luigi --module tasks RunAll` process on the finished experiment, run once
    first to finish it, then `reps` reruns that must find nothing to do: their wall
    seconds, the imports' share measured inside each, and the rest (interpreter start,
    configuration check, completeness of the graph, exit)."""
    first, first_output = timed_python(config, "-m", "luigi", *run_all_args(config))
    log_step(f"first RunAll: {first:.1f} s")
    walls, imports = [], []
    for rep in range(reps):
        wall, output = timed_python(config, "-c", timed_luigi(run_all_args(config)))
        if NOTHING_TO_DO not in output:
            raise RuntimeError(f"the rerun of a finished RunAll did work:\n{output[-3000:]}")
        walls.append(wall)
        imports.append(float(output.split("imports took ")[1].split()[0]))
        log_step(f"rep {rep + 1}/{reps} no-op RunAll: {wall:.2f} s, imports {imports[-1]:.2f} s")
    walls, imports = np.array(walls), np.array(imports)
    return ({"noop_runall_s": metric("noop_runall_s", walls, GOALS),
             "noop_imports_s": metric("noop_imports_s", imports),
             "noop_rest_s": metric("noop_rest_s", walls - imports)},
            {"first_runall_s": first, "first_runall_did_work": NOTHING_TO_DO not in first_output})


def metadata_memory(folder: Path) -> dict:
    """Peak memory above the start of a fresh process (MB, and bytes an image) of the items
    PrepareDataset holds through a store build: the folder listed, a validation part carved,
    the rows' shuffled order drawn (tasks/data.py), and the labels, splits and ids the
    store's arrays get in that order (write_image_store's end, written to a scratch store)."""
    def held() -> int:
        items = carve_validation(ImageFolder(folder).items(), 0.01, 0)
        order = shuffled_order(len(items), 0)
        with tempfile.TemporaryDirectory() as scratch:
            write_rows(zarr.open_group(scratch, mode="w"), items, order, [])
        return len(items)

    count: list[int] = []
    found = peak_rss(lambda: count.append(held()))
    return {"metadata_mb": found["work_mb"], "metadata_bytes_per_image": found["work_mb"] * 2**20 / count[0]}


def build_store(folder: Path, path: Path, size: int, quality: int | None, workers: int) -> dict:
    """Seconds of write_image_store over the listed folder (the listing not counted)."""
    source = ImageFolder(folder)
    items = source.items()
    return {"seconds": seconds(lambda: write_image_store(source, items, path, size, {}, workers=workers,
                                                         jpeg_quality=quality))}


def teacher_pass(store: Path, cache: Path, weights: Path, views: int, threads: int) -> dict:
    """Seconds and forwards of cache_teacher over the store read from disk (budget 0), as
    CacheTeacher runs it, into a fresh cache."""
    shutil.rmtree(cache, ignore_errors=True)
    s = ImageStore(store, budget=0)
    net = models.create(TEACHER, len(s.classes))
    job = TeacherJob(store=str(store), out=str(cache), model=TEACHER, kwargs_json="{}", weights=str(weights),
                     classes=len(s.classes), image_size=s.size, views=views, seed=0, batch_size=256,
                     threads=threads)
    train = s.rows("train")
    return {"seconds": seconds(lambda: cache_teacher(job, train, len(s.labels), net.num_features,
                                                     {"identity": {"views": views}})),
            "forwards": len(s.labels) + views * len(train)}


def with_memory(fn: Callable[..., dict], *args) -> dict:
    """fn(*args) with this process's memory before and at its peak (harness.peak_rss);
    run it in a fresh process."""
    torch.set_num_threads(2)
    result: dict = {}
    return {**peak_rss(lambda: result.update(fn(*args))), **result}


def stores_and_pass(out: Path, folder: Path, images: int, args: argparse.Namespace) -> dict:
    """Each store's build images/s, bytes per image and peak memory, raw and jpeg at each
    size, then the teacher pass over the jpeg store of the smallest size; each in a fresh
    process. Stores are rebuilt every run: the build is what is measured."""
    found = {}
    for size in args.sizes:
        for quality in (None, args.quality):
            name = f"store_{'jpeg' if quality else 'raw'}{size}"
            path = out / f"{name}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            build = in_fresh_process(with_memory, build_store, folder, path, size, quality, args.workers)
            stored = bytes_on_disk(path / "images")
            found[name] = {"img_per_s": images / build["seconds"], "bytes_per_image": stored / images,
                           "peak_mb": build["peak_mb"], "work_mb": build["work_mb"]}
            log_step(f"{name}: {found[name]}")
            if path != out / f"store_jpeg{min(args.sizes)}.zarr":  # the pass reads that one
                shutil.rmtree(path)
    weights = out / "pass-teacher.safetensors"
    random_teacher(TEACHER, args.classes, 0, weights)
    store = out / f"store_jpeg{min(args.sizes)}.zarr"
    done = in_fresh_process(with_memory, teacher_pass, store, out / "cache.zarr", weights, args.views, 2)
    found["teacher_pass"] = {"img_per_s": images / done["seconds"],
                             "forwards_per_s": done["forwards"] / done["seconds"],
                             "peak_mb": done["peak_mb"], "work_mb": done["work_mb"]}
    log_step(f"teacher_pass: {found['teacher_pass']}")
    shutil.rmtree(out / "cache.zarr")
    return found


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark at N, print its table, write its JSON; returns the results."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, required=True, help="N, images in the generated folder")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True, help="folder for the images, stores and experiment")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="store sizes, px")
    parser.add_argument("--quality", type=int, default=90, help="of the jpeg stores")
    parser.add_argument("--views", type=int, default=1, help="cached views per training image in the teacher pass")
    parser.add_argument("--workers", type=int, default=2, help="dask threads building a store")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the listing and the no-op rerun")
    parser.add_argument("--holdout", type=float, help="test fraction of the experiment's folder (ImageFolder's "
                        "default if unset); a small one keeps the first run's report bootstrap short at large N")
    parser.add_argument("--json", type=Path, help="default: OUT/scale.json")
    parser.add_argument("--layout", choices=list(LAYOUTS), default="flat",
                        help="flat: N images; imagenet: ImageNet's train/ of N and val/ (folders.py)")
    parser.add_argument("--folder", type=Path, help="the generated folder; default: OUT/<layout>-N-C")
    parser.add_argument("--parts", choices=["listing", "metadata", "noop", "stores"], nargs="+",
                        default=["listing", "noop", "stores"], help="what to measure")
    args = parser.parse_args(argv)
    folder = args.folder or args.out / f"{LAYOUTS[args.layout][0]}-{args.images}-{args.classes}"
    tic, figure = time.perf_counter(), calibration()
    tic_generate = time.perf_counter()
    written = LAYOUTS[args.layout][1](folder, args.images, args.classes)
    generated = {"generated_files": written, "generate_s": time.perf_counter() - tic_generate}
    log_step(f"generated {written} files in {folder} ({generated['generate_s']:.1f} s)")
    metrics, first = {}, {}
    if "listing" in args.parts:
        metrics |= listing_metrics(folder, args.reps)
    if "metadata" in args.parts:
        metrics |= {key: metric(key, value) for key, value in in_fresh_process(metadata_memory, folder).items()}
    if "noop" in args.parts:
        noop, first = noop_metrics(experiment(args.out, folder, args.classes, args.holdout), args.reps)
        metrics |= noop
    if "stores" in args.parts:
        stages = stores_and_pass(args.out, folder, sum(ImageFolder(folder).split_counts().values()), args)
        metrics |= {f"{stage}_{key}": metric(f"{stage}_{key}", value)
                    for stage, found in stages.items() for key, value in found.items()}
    result = {"images": args.images, "classes": args.classes, "layout": args.layout, "metrics": metrics,
              **generated, **first,
              "calibration_img_per_s": [figure, calibration()], "load_average": os.getloadavg(),
              "wall_seconds": time.perf_counter() - tic}
    print(table(metrics))
    print(f"N = {args.images:,}; calibration {figure:.0f} img/s before, {result['calibration_img_per_s'][1]:.0f} "
          f"after; wall {result['wall_seconds']:.0f} s")
    atomic_write_json(args.json or args.out / "scale.json", result, indent=1)
    return result


if __name__ == "__main__":
    main()
