"""Benchmark of the teacher cache against its alternatives, on a synthetic data set made
on the spot with a random-init teacher (nothing is downloaded).

Every metric is a ratio of two timings taken in this one run, with the same threads,
their repetitions interleaved (A B A B ...) so load that drifts during the run hits
both sides alike; the table gives the median ratio with its min and max.

    python -m pipeline.bench --json bench.json
    python -m pipeline.bench --device cuda --precision bf16 --json bench-gpu.json
    python -m pipeline.bench --calibrate      # the machine's figure, for any wall time
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import zarr

import models
from cache.reader import TeacherCache
from cache.storage.files import atomic_write_json
from pipeline.data.imagestore import ImageStore, write_image_store
from pipeline.data.synthetic import CLASSES, SyntheticSource
from pipeline.runtime.device import PRECISIONS, Precision, device_problem, resolve_device, resolve_precision
from pipeline.runtime.prefetch import prefetch
from pipeline.spec import parse_randaugment, parse_spec
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher
from pipeline.training.distributed import launch, launch_command
from pipeline.training.job import TrainJob
from pipeline.training.loader import Batch, TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.training.settings import TrainSettings
from pipeline.training.train import lr_at, student_loss, train_epoch
from pipeline.views.records import Recipe

STUDENTS = ("vit_tiny_patch16_224 img_size=64 patch_size=8 embed_dim=96 depth=4 num_heads=3",
            "pvt_v2_b0 depths=(1,1,2,1)",
            "convit_tiny img_size=64 patch_size=8 embed_dim=32 depth=4 num_heads=3 local_up_to_layer=2")
GOALS = {"teacher_pass_ratio": (">=", 0.90), "cached_kd_overhead": ("<=", 1.05),
         "online_fraction_of_theory": (">=", 0.95), "loader_headroom": (">=", 5.0),
         "cache_bytes_over_raw_fp16": ("<=", 1.10), "peak_rss_growth_teacher_pass": ("<=", 1.10),
         "peak_rss_growth_cached_epoch": ("<=", 1.10)}
# On a GPU the loader need only keep ahead of the step; on the CPU it shares the cores with it.
DEVICE_GOALS = {**GOALS, "loader_headroom": (">=", 2.0)}
# The recipe's views cost the CPU loader more (RandAugment, a partner's view to render and mix).
RECIPE_GOALS = {**GOALS, "loader_headroom": (">=", 3.0)}
_T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[2]  # the checkout: luigi reads luigi.cfg from where it starts


def shipped_config() -> configparser.ConfigParser:
    """The checkout's luigi.cfg, values as written."""
    shipped = configparser.ConfigParser(interpolation=None)
    shipped.read(ROOT / "luigi.cfg")
    return shipped


@dataclass(frozen=True)
class Settings:
    per_class: int = 32
    image_size: int = 64
    batch_size: int = 64
    teacher_batch_size: int = 256
    views: int = 8
    teacher: str = "convnext_atto"
    students: tuple[str, ...] = STUDENTS
    reps: int = 3
    threads: int = os.cpu_count() or 1
    epochs: int = 8
    shard_rows: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    alpha: float = 0.7
    temperature: float = 4.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    randaugment: str = ""
    mixup: float = 0.0
    cutmix: float = 0.0

    def recipe(self) -> Recipe:
        """How random views are drawn, for the teacher pass and every student alike."""
        return Recipe(parse_randaugment(self.randaugment), self.mixup, self.cutmix)

    def on(self) -> tuple[torch.device, Precision]:
        """The device and precision every model runs in."""
        return resolve_device(self.device), resolve_precision(self.precision, self.device)


HELP = {"per_class": "training images per class (8 classes), plus a quarter as many test images",
        "image_size": "side of the stored images and of the model input",
        "batch_size": "training batch size (students, online teacher)",
        "teacher_batch_size": "teacher-pass batch size (the pipeline uses 4x the training one)",
        "views": "random views cached per training image",
        "teacher": "teacher spec: timm name and key=value kwargs (random init)",
        "students": "student specs; the first is used for the single-student metrics",
        "reps": "repetitions of each interleaved measurement",
        "threads": "torch threads, everywhere",
        "epochs": "epochs of each run in students_from_one_pass",
        "shard_rows": "store and cache rows per shard",
        "lr": "students' peak learning rate", "weight_decay": "students' AdamW weight decay",
        "warmup_epochs": "epochs of learning-rate warm-up",
        "alpha": "weight of the distillation term", "temperature": "distillation temperature",
        "seed": "seed of data, views and initialisations",
        "device": "where every model runs: auto, cpu, cuda, cuda:N or mps (as [compute] device)",
        "precision": "auto, fp32, bf16 or fp16 (as [compute] precision); bf16_speedup compares "
                     "fp32 and bf16 regardless",
        "randaugment": "N,M: the recipe's RandAugment (as [train] randaugment); empty = none",
        "mixup": "the recipe's mixup alpha (as [train] mixup)", "cutmix": "the recipe's cutmix alpha"}


def say(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of fn(), including the GPU work it queued."""
    tic = time.perf_counter()
    fn()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter() - tic


def interleave(reps: int, **runs: Callable[[], float]) -> dict[str, np.ndarray]:
    """Call every run `reps` times, in turn (A B C A B C ...); each returns seconds."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(reps):
        for name, run in runs.items():
            out[name].append(run())
            say(f"rep {rep + 1}/{reps} {name}: {out[name][-1]:.2f} s")
    return {name: np.array(values) for name, values in out.items()}


def metric(name: str, values, goals: dict = GOALS) -> dict:
    """Median, min and max of per-repetition values, and whether the median meets the goal."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    median = float(np.median(values))
    op, bound = goals.get(name, (None, None))
    met = None if op is None else bool(median >= bound if op == ">=" else median <= bound)
    return {"median": median, "min": float(values.min()), "max": float(values.max()),
            "values": values.tolist(), "goal": op and f"{op} {bound:g}", "met": met}


@dataclass(frozen=True)
class Bench:
    """What the measurements share; picklable, for the fresh processes of the memory probe."""
    s: Settings
    store: Path
    weights: Path
    cache: Path
    classes: int
    teacher_dim: int

    def teacher(self) -> torch.nn.Module:
        name, kwargs = parse_spec(self.s.teacher)
        net = models.load_weights(models.create(name, self.classes, **kwargs), self.weights)
        return net.eval().to(self.s.on()[0])

    def teacher_pass(self) -> float:
        """Seconds for cache_teacher into a fresh cache, as tasks.CacheTeacher runs it."""
        shutil.rmtree(self.cache, ignore_errors=True)
        return seconds(self._teacher_pass)

    def _teacher_pass(self) -> None:
        s, store = self.s, ImageStore(self.store, budget=0)
        name, kwargs = parse_spec(s.teacher)
        job = TeacherJob(store=str(self.store), out=str(self.cache), model=name, kwargs_json=json.dumps(kwargs),
                         weights=str(self.weights), classes=self.classes, image_size=s.image_size, views=s.views,
                         seed=s.seed, batch_size=s.teacher_batch_size, threads=s.threads, device=s.device,
                         precision=s.on()[1].name, recipe=s.recipe())
        identity = {"teacher": s.teacher, "image_size": s.image_size, "views": s.views, "seed": s.seed}
        cache_teacher(job, store.rows("train"), len(store.labels), self.teacher_dim,
                      {"identity": identity, "classes": store.classes}, shard_rows=s.shard_rows)

    def counts(self) -> tuple[int, int]:
        """(images, training images) in the store."""
        store = ImageStore(self.store, budget=0)
        return len(store.labels), len(store.rows("train"))


def make_store(path: Path, s: Settings, per_class: int) -> None:
    source = SyntheticSource(seed=s.seed, train_per_class=per_class, test_per_class=max(1, per_class // 4),
                             size=s.image_size)
    write_image_store(source, source.items(), path, s.image_size,
                      {"source": "synthetic", "fingerprint": source.fingerprint()}, shard_rows=s.shard_rows)


def prepare(s: Settings, workdir: Path) -> Bench:
    """The image store and the teacher's weights (random init, saved as a checkpoint)."""
    make_store(workdir / "store", s, s.per_class)
    name, kwargs = parse_spec(s.teacher)
    torch.manual_seed(s.seed)
    teacher = models.create(name, len(CLASSES), **kwargs)
    models.save_weights(teacher, workdir / "teacher.safetensors")
    return Bench(s, workdir / "store", workdir / "teacher.safetensors", workdir / "cache.zarr",
                 len(CLASSES), teacher.num_features)


class Run:
    """A student's training run, an epoch at a time, in one of three modes: baseline
    (labels only), kd (from the teacher cache) or online (timm's LogitDistillationTask,
    running the teacher on every batch). All three step through pipeline.training.train.train_epoch."""

    def __init__(self, s: Settings, spec: str, store: ImageStore, mode: str, epochs: int,
                 cache: TeacherCache | None = None, teacher: torch.nn.Module | None = None):
        name, kwargs = parse_spec(spec)
        device, precision = s.on()
        torch.manual_seed(s.seed)
        net = models.create(name, len(store.classes), **kwargs).to(device)
        self.settings = TrainSettings(epochs=epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                                      warmup_epochs=s.warmup_epochs, image_size=s.image_size, seed=s.seed,
                                      augment=True, order="random", order_window=1, recipe=s.recipe(),
                                      label_smoothing=0.0)
        self.loader = TrainLoader(store, s.image_size, s.batch_size, s.seed, cache, device=device,
                                  recipe=s.recipe())
        autocast = lambda: precision.autocast(device)  # noqa: E731
        if mode == "online":
            task = models.timm_distillation(net, teacher, s.alpha, s.temperature).to(device)  # buffers start on the CPU
            # timm's task takes inputs normalised for the student, as a Net normalises them.
            # Its loss is computed inside, so under autocast too (autocast keeps it float32).
            def online_loss(batch: Batch) -> torch.Tensor:
                with autocast():
                    return task((batch.images - net.mean) / net.std, batch.labels)["loss"].float()
            self.loss_of = online_loss
            self.module, params = task, list(task.trainable_module.parameters())
        else:
            loss_fn = DistillationLoss(s.alpha, s.temperature)
            self.loss_of = student_loss(net, loss_fn, autocast)
            self.module, params = net, [*net.parameters(), *loss_fn.parameters()]
        self.opt = torch.optim.AdamW(params, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        self.scaler = precision.scaler(device)
        self.done = 0

    def epoch(self) -> float:
        """Seconds for the next epoch."""
        epoch, steps = self.done, len(self.loader)
        self.done += 1
        total, warmup = self.settings.epochs * steps, round(self.settings.warmup_epochs * steps)
        self.module.train()
        return seconds(lambda: train_epoch(self.loss_of, self.opt, prefetch(self.loader.epoch(epoch)),
                                           lambda i: lr_at(epoch * steps + i, total, warmup, self.settings.lr),
                                           self.scaler))

    def steps(self, batch: Batch, count: int) -> float:
        """Seconds per training step on one in-memory batch: the student's cost alone."""
        self.module.train()
        return seconds(lambda: train_epoch(self.loss_of, self.opt, [batch] * count,
                                           lambda i: self.settings.lr, self.scaler)) / count


@torch.inference_mode()
def forward_seconds(net: torch.nn.Module, s: Settings, batch_size: int, batches: int) -> float:
    """Seconds per bare forward of an in-memory batch on s's device and precision, after
    one untimed warm-up."""
    device, precision = s.on()
    x = torch.rand(batch_size, 3, s.image_size, s.image_size, device=device)
    with precision.autocast(device):
        net(x)
        return seconds(lambda: [net(x) for _ in range(batches)]) / batches


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
    say(f"warm-up teacher pass (not in the ratio): {warmup:.2f} s")
    t = interleave(b.s.reps, teacher_pass=b.teacher_pass,
                   bare_forward=lambda: batches * forward_seconds(teacher, b.s, tbs, batches))
    ratio = (forwards / t["teacher_pass"]) / (batches * tbs / t["bare_forward"])
    return {"teacher_pass_ratio": metric("teacher_pass_ratio", ratio)}, {**t, "teacher_pass_warmup": warmup}


def cache_size_metrics(b: Bench) -> tuple[dict, dict]:
    """On-disk bytes of the cache per store image, against the same outputs as plain float16."""
    images, train = b.counts()
    on_disk = sum(f.stat().st_size for f in b.cache.rglob("*") if f.is_file())
    per_view = b.classes + b.teacher_dim  # logits and features
    raw = 2 * (images * per_view + train * b.s.views * (per_view + b.s.recipe().width)) / images  # + view records
    return {"cache_bytes_per_image": metric("cache_bytes_per_image", on_disk / images),
            "cache_bytes_raw_fp16": metric("cache_bytes_raw_fp16", raw),
            "cache_bytes_over_raw_fp16": metric("cache_bytes_over_raw_fp16", on_disk / images / raw)
            }, {"cache_bytes_on_disk": on_disk}


def training_metrics(b: Bench) -> tuple[dict, dict]:
    """One student's baseline, cached-kd and online-kd epochs, its bare training step, the
    teacher's forward at the training batch size and the loader alone, interleaved."""
    s = b.s
    store, cache, teacher = ImageStore(b.store), TeacherCache(b.cache), b.teacher()
    runs = {mode: Run(s, s.students[0], store, mode, s.reps, cache if mode == "kd" else None, teacher)
            for mode in ("baseline", "kd", "online")}
    kd = runs["kd"]
    batch, steps = next(kd.loader.epoch(0)), len(kd.loader)
    t = interleave(s.reps, **{mode: run.epoch for mode, run in runs.items()},
                   student_step=lambda: kd.steps(batch, steps),
                   teacher_forward=lambda: forward_seconds(teacher, s, s.batch_size, steps),
                   loader=lambda: seconds(lambda: deque(kd.loader.epoch(0), maxlen=0)))
    online = t["online"] / t["kd"]
    theory = 1 + t["teacher_forward"] / t["student_step"]
    headroom = (len(kd.loader.rows) / t["loader"]) / (len(batch.labels) / t["student_step"])
    goals = DEVICE_GOALS if s.on()[0].type != "cpu" else GOALS if s.recipe() == Recipe() else RECIPE_GOALS
    return {"cached_kd_overhead": metric("cached_kd_overhead", t["kd"] / t["baseline"]),
            "online_over_cached": metric("online_over_cached", online),
            "online_over_cached_theory": metric("online_over_cached_theory", theory),
            "online_fraction_of_theory": metric("online_fraction_of_theory", online / theory),
            "loader_headroom": metric("loader_headroom", headroom, goals)}, t


def precision_metrics(b: Bench) -> tuple[dict, dict]:
    """One student's cached-kd epoch in fp32 over the same in bf16, on the same device."""
    store, cache = ImageStore(b.store), TeacherCache(b.cache)
    runs = {p: Run(replace(b.s, precision=p), b.s.students[0], store, "kd", b.s.reps, cache)
            for p in ("fp32", "bf16")}
    t = interleave(b.s.reps, **{f"{p}_epoch": run.epoch for p, run in runs.items()})
    return {"bf16_speedup": metric("bf16_speedup", t["fp32_epoch"] / t["bf16_epoch"])}, t


def run_seconds(b: Bench, spec: str, mode: str) -> float:
    """Seconds for a whole run of s.epochs epochs, building the student (and the teacher,
    or opening the cache) included."""
    def run() -> None:
        store = ImageStore(b.store)
        cache = TeacherCache(b.cache) if mode == "kd" else None
        teacher = b.teacher() if mode == "online" else None
        student = Run(b.s, spec, store, mode, b.s.epochs, cache, teacher)
        for _ in range(b.s.epochs):
            student.epoch()
    return seconds(run)


def students_metrics(b: Bench) -> tuple[dict, dict]:
    """One teacher pass plus M cached runs, over M online runs."""
    t = interleave(b.s.reps,
                   one_pass_and_cached=lambda: b.teacher_pass() + sum(run_seconds(b, spec, "kd")
                                                                     for spec in b.s.students),
                   online=lambda: sum(run_seconds(b, spec, "online") for spec in b.s.students))
    return {"students_from_one_pass": metric("students_from_one_pass",
                                             t["one_pass_and_cached"] / t["online"])}, t


def _status_mb(key: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key))
    return int(line.split()[1]) / 1024


def memory_of(b: Bench, what: str) -> dict:
    """Resident memory (MB) of this process before, and at its peak during, a teacher pass
    or a cached epoch, both reading from disk (memory budget 0) so the peak shows what
    grows with the data set."""
    torch.set_num_threads(b.s.threads)

    def cached_epoch() -> None:
        store, cache = ImageStore(b.store, budget=0), TeacherCache(b.cache, budget=0)
        Run(b.s, b.s.students[0], store, "kd", 1, cache).epoch()
    return peak_rss(b.teacher_pass if what == "teacher_pass" else cached_epoch)


def peak_rss(fn: Callable[[], object]) -> dict:
    """Resident memory (MB) of this process before fn(), and at its peak during it."""
    before = _status_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak (VmHWM) counts from here, not from the imports
    fn()
    peak = _status_mb("VmHWM")
    return {"before_mb": before, "peak_mb": peak, "work_mb": peak - before}


def in_fresh_process(fn: Callable, *args):
    """fn(*args) in a process forked from a server that only imported the main module
    (multiprocessing's default preload): none of this process's data, and torch is
    imported once for all such processes."""
    context = get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def memory_metrics(b: Bench) -> tuple[dict, dict]:
    """Peak memory above the process's baseline (the imports) of a teacher pass and of a
    cached epoch, at 4N over at N images, each in a fresh process."""
    workdir = b.store.parent
    make_store(workdir / "store-4n", b.s, 4 * b.s.per_class)
    sizes = {"n": replace(b, cache=workdir / "rss-n.zarr"),
             "4n": replace(b, store=workdir / "store-4n", cache=workdir / "rss-4n.zarr")}
    memory = {f"{what}_{size}": [] for what in ("teacher_pass", "cached_epoch") for size in sizes}
    for rep in range(b.s.reps):  # the allocator's peak varies by some 10% run to run
        for key, (what, bench) in zip(memory, [(w, bench) for w in ("teacher_pass", "cached_epoch")
                                               for bench in sizes.values()]):
            memory[key].append(m := in_fresh_process(memory_of, bench, what))
            say(f"rep {rep + 1}/{b.s.reps} memory of {key}: {m['work_mb']:.0f} MB above {m['before_mb']:.0f} MB")
    growth = lambda what: [big["work_mb"] / small["work_mb"]  # noqa: E731
                           for small, big in zip(memory[f"{what}_n"], memory[f"{what}_4n"])]
    return {f"peak_rss_growth_{what}": metric(f"peak_rss_growth_{what}", growth(what))
            for what in ("teacher_pass", "cached_epoch")}, memory


def calibration(threads: int = 2, reps: int = 7) -> float:
    """The machine's speed in one number, to quote beside every wall time: timm's
    convnext_atto forward, images/s at 64 px, batch 64, `threads` threads (median of `reps`
    after a warm-up). About 600 on an AVX2-only 2-core machine, twice that with AVX-512."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    net, x = models.create("convnext_atto", 1000).backbone.eval(), torch.randn(64, 3, 64, 64)
    with torch.inference_mode():
        net(x)
        seconds = []
        for _ in range(reps):
            tic = time.perf_counter()
            net(x)
            seconds.append(time.perf_counter() - tic)
    torch.set_num_threads(before)
    return round(64 / float(np.median(seconds)), 1)


def machine(s: Settings) -> dict:
    device, precision = s.on()
    return {"calibration_img_per_s": calibration(), "device": str(device), "precision": precision.name,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "cores": os.cpu_count(), "threads": s.threads, "platform": platform.platform(),
            "processor": platform.processor(), "python": platform.python_version(),
            "torch": torch.__version__, "timm": models.timm_version(), "zarr": zarr.__version__,
            "numpy": np.__version__, "load_average_at_start": os.getloadavg()}


def benchmark(s: Settings, workdir: Path, measures: tuple[str, ...] | None = None) -> dict:
    """The `measures` (names of MEASURES; default all, in its order) on a data set made in `workdir`."""
    measures = measures or tuple(MEASURES)
    tic = time.perf_counter()
    say(f"making the data set and teacher in {workdir}")
    b = prepare(s, workdir)
    images, train = b.counts()
    settings = {**asdict(s), "images": images, "train_images": train,
                "teacher_forwards_per_pass": images + train * s.views}
    result = {"machine": machine(s), "settings": settings, "metrics": {}, "timings": {}}
    if "teacher_pass" not in measures:
        b.teacher_pass()  # the cache the others read
    for name, measure in MEASURES.items():
        if name not in measures:
            continue
        say(f"measuring: {name}")
        metrics, timings = measure(b)
        result["metrics"].update(metrics)
        result["timings"][name] = {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                                   for k, v in timings.items()}
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["wall_seconds"] = time.perf_counter() - tic
    return result


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
    name, kwargs = parse_spec(s.students[0])
    settings = TrainSettings(epochs=2, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                             warmup_epochs=s.warmup_epochs, image_size=s.image_size, seed=s.seed, augment=True,
                             order="random", order_window=1, recipe=s.recipe(), label_smoothing=0.0)

    def epoch_seconds(processes: int) -> float:
        folder = Path(tempfile.mkdtemp(dir=b.cache.parent))
        job = TrainJob(model=name, kwargs=kwargs, store=str(b.store), settings=asdict(settings), workdir=str(folder),
                       weights=str(folder / "student.safetensors"), memory_budget=1 << 40, cache=str(b.cache),
                       distill={"alpha": s.alpha, "temperature": s.temperature}, precision=s.on()[1].name)
        if processes == 1:
            job.run()
        else:
            entry = ["pipeline.training.job", str(job.save(folder / "job.json"))]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            launch(launch_command(entry, processes), folder / "ranks.log", env)
        seconds = np.median([epoch["seconds"] for epoch in json.loads((folder / "history.json").read_text())])
        shutil.rmtree(folder)
        return float(seconds)

    timings = interleave(s.reps, one_process=lambda: epoch_seconds(1), two_ranks=lambda: epoch_seconds(2))
    return {"ddp_epoch_ratio": metric("ddp_epoch_ratio", timings["two_ranks"] / timings["one_process"])}, timings


def table(metrics: dict) -> str:
    rows = [("metric", "median", "min", "max", "goal", "met?")]
    rows += [(name, f"{m['median']:.4g}", f"{m['min']:.4g}", f"{m['max']:.4g}", m["goal"] or "",
              {True: "yes", False: "NO", None: ""}[m["met"]]) for name, m in metrics.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


MEASURES = {"teacher_pass": teacher_pass_metrics, "cache_size": cache_size_metrics, "training": training_metrics,
            "precision": precision_metrics, "students": students_metrics, "ddp": ddp_metrics,
            "memory": memory_metrics}


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench",
                                     description=__doc__.split("\n\n")[0])
    for field in fields(Settings):
        flag, default = "--" + field.name.replace("_", "-"), field.default
        if isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", default=list(default), help=HELP[field.name])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=HELP[field.name])
    parser.add_argument("--json", type=Path, help="write every result, setting and timing here")
    parser.add_argument("--measure", nargs="+", choices=list(MEASURES), default=list(MEASURES),
                        help="only these measurements (default: all)")
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temporary folder, removed)")
    parser.add_argument("--calibrate", action="store_true",
                        help="only print the machine's calibration figure "
                             "(convnext_atto img/s at 64 px, batch 64, 2 threads)")
    args = parser.parse_args(argv)
    if problem := device_problem(args.device):
        parser.error(f"--device {args.device}: {problem}")
    if args.precision not in PRECISIONS:
        parser.error(f"--precision {args.precision}: use {', '.join(PRECISIONS)}")
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    return Settings(**{**values, "students": tuple(values["students"])}), args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its table, optionally write JSON; returns the results."""
    s, args = parse_args(argv)
    if args.calibrate:
        figure = calibration()
        print(f"calibration: convnext_atto forward {figure:.0f} img/s at 64 px, batch 64, 2 threads")
        return {"calibration_img_per_s": figure}
    torch.set_num_threads(s.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kd-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = benchmark(s, workdir, tuple(args.measure))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(result["metrics"]))
    print(f"wall time {result['wall_seconds']:.0f} s")
    if args.json:
        atomic_write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()
