"""One task per GPU: which GPUs there are, found without initialising CUDA, and a lock per
GPU that a process holds while it uses that GPU.

Luigi's workers are processes forked from the scheduling one, and a process forked after
CUDA was initialised cannot use CUDA. So the scheduling side only counts GPUs (with NVML,
as torch.cuda.device_count() does before CUDA starts, but never falling back to the CUDA
runtime), and a task picks its GPU in its own process, when it starts running: the first
GPU whose lock is free. The lock is flock(2) (pipeline/runtime/lock.py), so a task that dies,
even by SIGKILL, releases its GPU.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from pipeline.runtime.lock import holder, holding, try_lock

log = logging.getLogger(__name__)
_held: str | None = None  # the device this process holds, if it holds one for its lifetime


def visible_gpus() -> list[str]:
    """cuda:0 ... cuda:N-1 for the GPUs this process may use (CUDA_VISIBLE_DEVICES honoured),
    counted with NVML, so that CUDA stays uninitialised for processes forked afterwards."""
    if not torch.backends.cuda.is_built():
        return []
    count = _nvml_count()
    if count < 0:
        named = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        count = len([d for d in named.split(",") if d.strip()])
    return [f"cuda:{i}" for i in range(count)]


def _nvml_count() -> int:
    """GPUs counted by NVML, CUDA_VISIBLE_DEVICES honoured, without initialising CUDA; -1
    when NVML cannot tell (no driver, MIG UUIDs). torch offers this only as the private
    torch.cuda._device_count_nvml (the public device_count() may initialise CUDA): this is
    the one place that calls it, and a torch without it counts as -1, so the caller falls
    back to CUDA_VISIBLE_DEVICES (or [compute] gpus lists the GPUs)."""
    count_nvml = getattr(torch.cuda, "_device_count_nvml", None)
    return count_nvml() if count_nvml is not None else -1


def device_gpus(device: str, gpus: str = "") -> list[str]:
    """The GPUs that tasks running on `device` ([compute] device) share out, one each: none
    for a device other than a GPU; the one named (cuda:1); for cuda or auto the ones listed
    in `gpus` ([compute] gpus, comma-separated), else every GPU visible."""
    if device != "auto" and not device.startswith("cuda"):
        return []
    if ":" in device:
        return [device]
    return [g.strip() for g in gpus.split(",") if g.strip()] or visible_gpus()


@contextmanager
def hold_device(candidates: list[str], lock_dir: Path, owner: str = "", poll: float = 0.5) -> Iterator[str]:
    """Hold the first free device of `candidates` for the block, by a lock file per device in
    `lock_dir`; while all are held, wait, saying for whom."""
    if not candidates:
        raise ValueError("hold_device needs at least one device to choose from")
    lock_dir.mkdir(parents=True, exist_ok=True)
    locks = {device: lock_dir / f"{device}.lock" for device in candidates}
    waiting = False
    while True:
        for device, path in locks.items():
            if (f := try_lock(path, owner)) is not None:
                with holding(f):
                    yield device
                return
        if not waiting:
            log.warning("%s waits for a device: %s", owner or f"pid {os.getpid()}",
                        "; ".join(f"{device} is held by {holder(path)}" for device, path in locks.items()))
            waiting = True
        time.sleep(poll)


def held() -> str | None:
    """The device this process holds for its lifetime (a dask worker of gpu_cluster), if any."""
    return _held


def hold_for_life(candidates: list[str], lock_dir: Path, owner: str) -> Callable[[], None]:
    """Hold a device until the returned function is called (or the process ends); held() says which."""
    global _held
    stack = ExitStack()
    _held = stack.enter_context(hold_device(candidates, lock_dir, owner))

    def release() -> None:
        global _held
        _held = None
        stack.close()
    return release
