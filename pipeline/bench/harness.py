"""What every benchmark shares: timing and interleaving repetitions, metrics against goals
and their table, the machine's calibration figure and description, progress lines, bytes
on disk, peak memory and fresh processes, and the checkout's luigi.cfg."""
from __future__ import annotations

import configparser
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import zarr

import models
from pipeline.runtime.cost import reset_peak

_T0 = time.perf_counter()
ROOT = Path(__file__).resolve().parents[2]  # the checkout: luigi reads luigi.cfg from where it starts


def shipped_config() -> configparser.ConfigParser:
    """The checkout's luigi.cfg, values as written."""
    shipped = configparser.ConfigParser(interpolation=None)
    shipped.read(ROOT / "luigi.cfg")
    return shipped


def log_step(message: str) -> None:
    """Print `message` to stderr, stamped with the seconds since the benchmark started."""
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
            log_step(f"rep {rep + 1}/{reps} {name}: {out[name][-1]:.2f} s")
    return {name: np.array(values) for name, values in out.items()}


def metric(name: str, values, goals: dict[str, tuple[str, float]] | None = None) -> dict:
    """Median, min and max of per-repetition values, and whether the median meets its goal
    in `goals` (name -> (">=" or "<=", bound)); no goal, no verdict."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    median = float(np.median(values))
    op, bound = (goals or {}).get(name, (None, None))
    met = None if op is None else bool(median >= bound if op == ">=" else median <= bound)
    return {"median": median, "min": float(values.min()), "max": float(values.max()),
            "values": values.tolist(), "goal": op and f"{op} {bound:g}", "met": met}


def table(metrics: dict) -> str:
    """The metrics as a text table: median, min, max, goal and whether it is met."""
    rows = [("metric", "median", "min", "max", "goal", "met?")]
    rows += [(name, f"{m['median']:.4g}", f"{m['min']:.4g}", f"{m['max']:.4g}", m["goal"] or "",
              {True: "yes", False: "NO", None: ""}[m["met"]]) for name, m in metrics.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


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


def machine(device: torch.device, precision: str, threads: int) -> dict:
    """The machine, its calibration figure and the software's versions, for a benchmark run
    on `device` in `precision` with `threads` torch threads."""
    return {"calibration_img_per_s": calibration(), "device": str(device), "precision": precision,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
            "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "processor": platform.processor(), "python": platform.python_version(),
            "torch": torch.__version__, "timm": models.timm_version(), "zarr": zarr.__version__,
            "numpy": np.__version__, "load_average_at_start": os.getloadavg()}


def bytes_on_disk(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _status_mb(key: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(key))
    return int(line.split()[1]) / 1024


def peak_rss(fn: Callable[[], object]) -> dict:
    """Resident memory (MB) of this process before fn(), and at its peak during it."""
    before = _status_mb("VmRSS")
    reset_peak()  # the peak counts from here, not from the imports
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
