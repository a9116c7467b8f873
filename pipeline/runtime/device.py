"""Where models run and in what precision: `[compute] device` and `[compute] precision`.

Nothing here creates a CUDA context: GPUs are counted with NVML only
(pipeline.runtime.gpus.visible_gpus; torch.cuda.is_available() calls cudaGetDeviceCount, and
torch.cuda.device_count() falls back to it when NVML fails, either of which poisons
fork), so Luigi's scheduling process may call any of it and still fork workers that use
the GPU.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from pipeline.runtime.gpus import visible_gpus
from pipeline.runtime.prefetch import prefetch

DEVICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps() -> bool:
    return torch.backends.mps.is_available()


def device_type(setting: str) -> str:
    """What `setting` asks for, auto resolved: cuda, mps or cpu (present or not)."""
    if setting == "auto":
        return "cuda" if visible_gpus() else "mps" if _mps() else "cpu"
    return setting.split(":")[0]


def device_problem(setting: str) -> str | None:
    """Why `setting` names no device of this machine (what to do instead), or None."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", setting):
        return f"use {DEVICES}"
    kind = device_type(setting)
    if kind == "cuda":
        count = len(visible_gpus())
        if _index(setting) >= count:
            have = f"GPUs 0 to {count - 1}" if count else "no CUDA GPU (or its torch was built without CUDA)"
            return f"this machine has {have}; name a GPU it has, or use auto or cpu"
    if kind == "mps" and not _mps():
        return "this machine has no Apple MPS device; use auto or cpu"
    return None


def resolve_device(setting: str) -> torch.device:
    """The torch.device of a `[compute] device` setting: auto is CUDA when present, else
    MPS, else the CPU; cuda is cuda:0. Raises ValueError, naming the setting and the fix,
    for a device that is absent or a setting that is none of auto, cpu, cuda, cuda:N, mps."""
    if problem := device_problem(setting):
        raise ValueError(f"[compute] device = {setting}: {problem}")
    kind = device_type(setting)
    return torch.device("cuda", _index(setting)) if kind == "cuda" else torch.device(kind)


def _index(setting: str) -> int:
    return int(setting.partition(":")[2] or 0)


@dataclass(frozen=True)
class Precision:
    """The arithmetic of the models' forward passes: fp32, or autocast to bf16 or fp16.
    Losses, metrics and cached outputs are float32 whatever it is (callers cast the
    model's outputs with .float())."""
    name: str

    def __post_init__(self) -> None:
        if self.name not in _DTYPES:
            raise ValueError(f"[compute] precision = {self.name}: use {', '.join(PRECISIONS)}")

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.name]

    @property
    def scaled(self) -> bool:
        """Whether training needs a GradScaler: fp16 gradients underflow, bf16 ones do not."""
        return self.name == "fp16"

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """The context forward passes run in; a no-op for fp32."""
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A GradScaler for fp16, else a disabled one (which steps the optimizer unchanged)."""
        return torch.amp.GradScaler(device.type, enabled=self.scaled)


def resolve_precision(setting: str, device_setting: str) -> Precision:
    """`[compute] precision`: auto is bf16 on CUDA and fp32 elsewhere (CPU autocast
    supports bf16 but is rarely faster; MPS autocast is young). Resolved from the device
    *setting*, without creating a CUDA context, so task fingerprints may hold it."""
    if setting == "auto":
        return Precision("bf16" if device_type(device_setting) == "cuda" else "fp32")
    return Precision(setting)


def compile_problem(device_setting: str) -> str | None:
    """Why torch.compile (inductor) cannot run for this device setting here, or None."""
    if device_type(device_setting) == "cuda":
        from torch.utils._triton import has_triton
        return None if has_triton() else "torch.compile on CUDA needs triton: pip install triton, or compile = false"
    if device_type(device_setting) == "cpu" and not any(map(shutil.which, ("c++", "g++", "clang++"))):
        return "torch.compile on the CPU needs a C++ compiler (c++, g++ or clang++ on PATH), or compile = false"
    return None


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x on `device`; to CUDA through pinned memory, without waiting for the copy. On the
    CPU it is x itself."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


Tensors = tuple[torch.Tensor, ...]


def prefetch_on_device(batches: Iterator[Tensors], device: torch.device, depth: int = 2) -> Iterator[Tensors]:
    """`batches` (tuples of tensors on accelerator `device`, and host arrays), each made on a background
    thread while the caller works on the one before. On CUDA that thread queues its copies
    on a stream of its own, so they overlap the caller's kernels rather than wait behind
    them; a batch is handed over once the caller's stream has waited for it, and its memory
    stays the caller's until the caller's stream is done with it."""
    if device.type != "cuda":
        yield from prefetch(batches, depth)
        return
    for batch, ready in prefetch(_on_side_stream(batches, device), depth):
        stream = torch.cuda.current_stream(device)
        stream.wait_event(ready)
        for t in batch:
            if isinstance(t, torch.Tensor):
                t.record_stream(stream)
        yield batch


def _on_side_stream(batches: Iterator[Tensors], device: torch.device) -> Iterator[tuple[Tensors, torch.cuda.Event]]:
    side = torch.cuda.Stream(device)
    torch.cuda.set_stream(side)  # the current stream is per thread: this runs on prefetch's thread alone
    for batch in batches:
        yield batch, side.record_event()
