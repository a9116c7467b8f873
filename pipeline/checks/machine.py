"""The checks of where the work runs: the scheduler, the SLURM jobs, the device and the
work folder."""
from __future__ import annotations

from typing import Any

from dask.utils import parse_bytes

from cache.storage.files import probe_writable
from pipeline.checks.problems import Problem, failure
from pipeline.runtime.device import compile_problem, device_problem

SCHEDULERS = ("threads", "processes", "synchronous", "slurm")


def machine_problems(settings: dict[str, dict[str, Any]]) -> list[Problem]:
    """[compute] scheduler (and [slurm] for its jobs), device and compile; [paths] work."""
    compute = settings.get("compute", {})
    scheduler = compute.get("scheduler")
    problems = []
    if scheduler is not None and scheduler not in SCHEDULERS and "://" not in scheduler:
        problems.append(Problem("compute", "scheduler", scheduler,
                                f"use {', '.join(SCHEDULERS)} or a cluster address such as tcp://host:8786"))
    if scheduler == "slurm":
        problems += _slurm(settings.get("slurm", {}))
    problems += _device(compute)
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


def _slurm(slurm: dict[str, Any]) -> list[Problem]:
    try:
        import dask_jobqueue  # noqa: F401 (the `cluster` extra)
    except ImportError:
        return [Problem("compute", "scheduler", "slurm", 'needs dask-jobqueue: pip install -e ".[cluster]"')]
    problems = [Problem("slurm", key, slurm[key], "must be >= 1")
                for key in ("cores", "processes", "jobs") if isinstance(slurm.get(key), int) and slurm[key] < 1]
    processes, cores = slurm.get("processes"), slurm.get("cores")
    if isinstance(processes, int) and isinstance(cores, int) and processes > cores >= 1:
        problems.append(Problem("slurm", "processes", processes, f"must be <= cores ({cores})"))
    if "memory" in slurm:
        problems += failure("slurm", "memory", slurm["memory"], parse_bytes, slurm["memory"])
    return problems


def _work(folder: str) -> list[Problem]:
    try:
        probe_writable(folder)
    except OSError as error:
        return [Problem("paths", "work", folder, f"cannot write there ({error}); give a folder this user can write")]
    return []
