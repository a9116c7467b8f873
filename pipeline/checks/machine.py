"""The checks of where the work runs: the scheduler, the SLURM jobs, the device and the
work folder."""
from __future__ import annotations

import re
from typing import Any

from dask.utils import parse_bytes

from cache.storage.files import probe_writable
from pipeline.checks.problems import Problem, failure
from pipeline.runtime.device import compile_problem, device_problem

SCHEDULERS = ("threads", "processes", "synchronous", "slurm", "gpus")
WALLTIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}")  # SLURM's forms: MM, HH:MM:SS, D-HH, D-HH:MM:SS, ...
GPU = re.compile(r"[a-z]+:\d+")  # a device and its index, as torch names them (tests name fake ones)


def machine_problems(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """[compute] scheduler, device, compile and gpus; [slurm]; [paths] work."""
    compute = settings.get("compute", {})
    scheduler = compute.get("scheduler")
    problems = []
    if scheduler is not None and scheduler not in SCHEDULERS and "://" not in scheduler:
        problems.append(Problem("compute", "scheduler", scheduler,
                                f"use {', '.join(SCHEDULERS)} or a cluster address such as tcp://host:8786"))
    if scheduler == "slurm":
        problems += _jobqueue()
    problems += _slurm(settings.get("slurm", {})) + _device(compute) + _gpus(compute)
    if "work" in settings.get("paths", {}):
        problems += _work(settings["paths"]["work"])
    return problems


def _device(compute: dict[str, Any]) -> list[Problem]:
    """The device must be on this machine (a task would fail on it later) and torch.compile
    able to run there when asked for. (Luigi's choices already check the precision.)"""
    if "device" not in compute:
        return []
    if problem := device_problem(compute["device"]):
        return [Problem("compute", "device", compute["device"], problem)]
    if compute.get("compile") and (problem := compile_problem(compute["device"])):
        return [Problem("compute", "compile", True, problem)]
    return []


def _gpus(compute: dict[str, Any]) -> list[Problem]:
    listed = compute.get("gpus", "")
    if all(GPU.fullmatch(gpu.strip()) for gpu in listed.split(",") if gpu.strip()):
        return []
    return [Problem("compute", "gpus", listed, "list GPUs as cuda:N, comma-separated, e.g. cuda:0,cuda:2; "
                    "empty = every GPU found")]


def _jobqueue() -> list[Problem]:
    try:
        import dask_jobqueue  # noqa: F401 (the `cluster` extra)
    except ImportError:
        return [Problem("compute", "scheduler", "slurm", 'needs dask-jobqueue: pip install -e ".[cluster]"')]
    return []


def _slurm(slurm: dict[str, Any]) -> list[Problem]:
    """[slurm]'s forms, whatever the scheduler: a value written there is meant for some run.
    (Its numbers' ranges are declared with them.)"""
    problems = []
    processes, cores = slurm.get("processes"), slurm.get("cores")
    if isinstance(processes, int) and isinstance(cores, int) and processes > cores >= 1:
        problems.append(Problem("slurm", "processes", processes, f"must be <= cores ({cores})"))
    if "memory" in slurm:
        problems += failure("slurm", "memory", slurm["memory"], parse_bytes, slurm["memory"])
    if "walltime" in slurm and not WALLTIME.fullmatch(slurm["walltime"]):
        problems.append(Problem("slurm", "walltime", slurm["walltime"], "give HH:MM:SS (or MM, D-HH:MM:SS), "
                                "e.g. 01:00:00"))
    lines = [line.strip() for line in slurm.get("extra_directives", "").splitlines() if line.strip()]
    problems += [Problem("slurm", "extra_directives", line, "give the option as sbatch takes it, e.g. "
                         "--qos=normal (each line is written after #SBATCH)") for line in lines if line[0] != "-"]
    return problems


def _work(folder: str) -> list[Problem]:
    try:
        probe_writable(folder)
    except OSError as error:
        return [Problem("paths", "work", folder, f"cannot write there ({error}); give a folder this user can write")]
    return []
