"""The cache-vs-online benchmark's measurements (`python -m pipeline.bench`), each of a Bench
to (metrics, timings), and the goals its metrics are held to."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cache.reader import TeacherCache
from pipeline.bench import harness
from pipeline.bench.fixtures import synthetic_store
from pipeline.bench.runs import Bench, Settings, StudentRun
from pipeline.data.imagestore import ImageStore
from pipeline.training.distributed import launch, launch_command
from pipeline.training.job import TrainJob
from pipeline.views.records import Recipe

GOALS = {"teacher_pass_ratio": (">=", 0.90), "cached_kd_overhead": ("<=", 1.05),
         "online_fraction_of_theory": (">=", 0.95), "loader_headroom": (">=", 5.0),
         "cache_bytes_over_raw_fp16": ("<=", 1.10), "peak_rss_growth_teacher_pass": ("<=", 1.10),
         "peak_rss_growth_cached_epoch": ("<=", 1.10)}
# On a GPU the loader need only keep ahead of the step; on the CPU it shares the cores with it.
DEVICE_GOALS = {**GOALS, "loader_headroom": (">=", 2.0)}
# The recipe's views cost the CPU loader more (RandAugment, a partner's view to render and mix).
RECIPE_GOALS = {**GOALS, "loader_headroom": (">=", 3.0)}


@torch.inference_mode()
def forward_seconds(net: torch.nn.Module, s: Settings, batch_size: int, batches: int) -> float:
    """Seconds per bare forward of an in-memory batch on s's device and precision, after
    one untimed warm-up."""
    device, precision = s.on()
    x = torch.rand(batch_size, 3, s.image_size, s.image_size, device=device)
    with precision.autocast(device):
        net(x)
        return harness.seconds(lambda: [net(x) for _ in range(batches)]) / batches


def teacher_pass_metrics(b: Bench) -> tuple[dict, dict]:
    """cache_teacher images/s (every teacher forward: eval view of each image, V views of
    each training image) over bare teacher forward images/s at the same batch size, both
    warm: one untimed pass first (building the pass's teacher, once per process, and on a
    GPU starting CUDA and loading its kernels), its seconds reported apart as
    teacher_pass_warmup."""
    images, train = b.counts()
    forwards, tbs = images + train * b.s.views, b.s.teacher_batch_size
    batches = max(1, round(forwards / tbs))
    teacher = b.teacher()
    warmup = b.teacher_pass()
    harness.log_step(f"warm-up teacher pass (not in the ratio): {warmup:.2f} s")
    t = harness.interleave(b.s.reps, teacher_pass=b.teacher_pass,
                   bare_forward=lambda: batches * forward_seconds(teacher, b.s, tbs, batches))
    ratio = (forwards / t["teacher_pass"]) / (batches * tbs / t["bare_forward"])
    metrics = {"teacher_pass_ratio": harness.metric("teacher_pass_ratio", ratio, GOALS)}
    return metrics, {**t, "teacher_pass_warmup": warmup}


def cache_size_metrics(b: Bench) -> tuple[dict, dict]:
    """On-disk bytes of the cache per store image, against the same outputs as plain float16."""
    images, train = b.counts()
    on_disk = harness.bytes_on_disk(b.cache)
    per_view = b.classes + b.teacher_dim  # logits and features
    raw = 2 * (images * per_view + train * b.s.views * (per_view + b.s.recipe().width)) / images  # + view records
    return {"cache_bytes_per_image": harness.metric("cache_bytes_per_image", on_disk / images, GOALS),
            "cache_bytes_raw_fp16": harness.metric("cache_bytes_raw_fp16", raw, GOALS),
            "cache_bytes_over_raw_fp16": harness.metric("cache_bytes_over_raw_fp16", on_disk / images / raw, GOALS)
            }, {"cache_bytes_on_disk": on_disk}


def training_metrics(b: Bench) -> tuple[dict, dict]:
    """One student's baseline, cached-kd and online-kd epochs, its bare training step, the
    teacher's forward at the training batch size and the loader alone, interleaved."""
    s = b.s
    store, cache, teacher = ImageStore(b.store), TeacherCache(b.cache), b.teacher()
    runs = {mode: StudentRun(s, s.students[0], store, mode, s.reps, cache if mode == "kd" else None, teacher)
            for mode in ("baseline", "kd", "online")}
    kd = runs["kd"]
    batch, steps = next(kd.loader.epoch(0)), len(kd.loader)
    t = harness.interleave(s.reps, **{mode: run.epoch for mode, run in runs.items()},
                   student_step=lambda: kd.steps(batch, steps),
                   teacher_forward=lambda: forward_seconds(teacher, s, s.batch_size, steps),
                   loader=lambda: harness.seconds(lambda: deque(kd.loader.epoch(0), maxlen=0)))
    online = t["online"] / t["kd"]
    theory = 1 + t["teacher_forward"] / t["student_step"]
    headroom = (len(kd.loader.rows) / t["loader"]) / (len(batch.labels) / t["student_step"])
    goals = DEVICE_GOALS if s.on()[0].type != "cpu" else GOALS if s.recipe() == Recipe() else RECIPE_GOALS
    return {"cached_kd_overhead": harness.metric("cached_kd_overhead", t["kd"] / t["baseline"], GOALS),
            "online_over_cached": harness.metric("online_over_cached", online, GOALS),
            "online_over_cached_theory": harness.metric("online_over_cached_theory", theory, GOALS),
            "online_fraction_of_theory": harness.metric("online_fraction_of_theory", online / theory, GOALS),
            "loader_headroom": harness.metric("loader_headroom", headroom, goals)}, t


def precision_metrics(b: Bench) -> tuple[dict, dict]:
    """One student's cached-kd epoch in fp32 over the same in bf16, on the same device."""
    store, cache = ImageStore(b.store), TeacherCache(b.cache)
    runs = {p: StudentRun(replace(b.s, precision=p), b.s.students[0], store, "kd", b.s.reps, cache)
            for p in ("fp32", "bf16")}
    t = harness.interleave(b.s.reps, **{f"{p}_epoch": run.epoch for p, run in runs.items()})
    return {"bf16_speedup": harness.metric("bf16_speedup", t["fp32_epoch"] / t["bf16_epoch"], GOALS)}, t


def run_seconds(b: Bench, spec: str, mode: str) -> float:
    """Seconds for a whole run of s.epochs epochs, building the student (and the teacher,
    or opening the cache) included."""
    def run() -> None:
        store = ImageStore(b.store)
        cache = TeacherCache(b.cache) if mode == "kd" else None
        teacher = b.teacher() if mode == "online" else None
        student = StudentRun(b.s, spec, store, mode, b.s.epochs, cache, teacher)
        for _ in range(b.s.epochs):
            student.epoch()
    return harness.seconds(run)


def students_metrics(b: Bench) -> tuple[dict, dict]:
    """One teacher pass plus M cached runs, over M online runs."""
    t = harness.interleave(b.s.reps,
                   one_pass_and_cached=lambda: b.teacher_pass() + sum(run_seconds(b, spec, "kd")
                                                                     for spec in b.s.students),
                   online=lambda: sum(run_seconds(b, spec, "online") for spec in b.s.students))
    return {"students_from_one_pass": harness.metric("students_from_one_pass",
                                             t["one_pass_and_cached"] / t["online"], GOALS)}, t


def memory_of(b: Bench, what: str) -> dict:
    """Resident memory (MB) of this process before, and at its peak during, a teacher pass
    or a cached epoch, both reading from disk (memory budget 0) so the peak shows what
    grows with the data set."""
    torch.set_num_threads(b.s.threads)

    def cached_epoch() -> None:
        store, cache = ImageStore(b.store, budget=0), TeacherCache(b.cache, budget=0)
        StudentRun(b.s, b.s.students[0], store, "kd", 1, cache).epoch()
    return harness.peak_rss(b.teacher_pass if what == "teacher_pass" else cached_epoch)


def memory_metrics(b: Bench) -> tuple[dict, dict]:
    """Peak memory above the process's baseline (the imports) of a teacher pass and of a
    cached epoch, at 4N over at N images, each in a fresh process."""
    workdir = b.store.parent
    synthetic_store(workdir / "store-4n", 4 * b.s.per_class, b.s.image_size, b.s.seed, b.s.shard_rows)
    sizes = {"n": replace(b, cache=workdir / "rss-n.zarr"),
             "4n": replace(b, store=workdir / "store-4n", cache=workdir / "rss-4n.zarr")}
    memory = {f"{what}_{size}": [] for what in ("teacher_pass", "cached_epoch") for size in sizes}
    for rep in range(b.s.reps):  # the allocator's peak varies by some 10% run to run
        for key, (what, bench) in zip(memory, [(w, bench) for w in ("teacher_pass", "cached_epoch")
                                               for bench in sizes.values()]):
            memory[key].append(m := harness.in_fresh_process(memory_of, bench, what))
            harness.log_step(f"rep {rep + 1}/{b.s.reps} memory of {key}: {m['work_mb']:.0f} MB "
                             f"above {m['before_mb']:.0f} MB")
    growth = lambda what: [big["work_mb"] / small["work_mb"]  # noqa: E731
                           for small, big in zip(memory[f"{what}_n"], memory[f"{what}_4n"])]
    return {f"peak_rss_growth_{what}": harness.metric(f"peak_rss_growth_{what}", growth(what), GOALS)
            for what in ("teacher_pass", "cached_epoch")}, memory


def ddp_metrics(b: Bench) -> tuple[dict, dict]:
    """The first student, kd from the cache, trained 2 epochs by one process and by 2
    data-parallel ranks (torchrun, gloo): the median epoch's seconds of each and their ratio,
    ddp_epoch_ratio. On the CPU only: the ranks share the machine's cores (each runs 1
    thread), so it shows the overhead of the data-parallel path, not a speed-up; on one GPU
    two ranks cannot share it (NCCL)."""
    s = b.s
    if s.on()[0].type != "cpu":
        return {}, {}
    if not b.cache.exists():
        b.teacher_pass()
    setup = StudentRun.setup(s, s.students[0], "kd", 2)

    def epoch_seconds(processes: int) -> float:
        folder = Path(tempfile.mkdtemp(dir=b.cache.parent))
        job = TrainJob(setup, store=str(b.store), workdir=str(folder), weights=str(folder / "student.safetensors"),
                       memory_budget=1 << 40, cache=str(b.cache))
        if processes == 1:
            job.run()
        else:
            entry = ["pipeline.training.job", str(job.save(folder / "job.json"))]
            env = {**os.environ, "PYTHONPATH": str(harness.ROOT)}
            launch(launch_command(entry, processes), folder / "ranks.log", env)
        seconds = np.median([epoch["seconds"] for epoch in json.loads((folder / "history.json").read_text())])
        shutil.rmtree(folder)
        return float(seconds)

    timings = harness.interleave(s.reps, one_process=lambda: epoch_seconds(1), two_ranks=lambda: epoch_seconds(2))
    ratio = timings["two_ranks"] / timings["one_process"]
    return {"ddp_epoch_ratio": harness.metric("ddp_epoch_ratio", ratio)}, timings

