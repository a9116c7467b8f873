"""Where the dask work (image store, teacher pass) runs: a local scheduler, a running dask
cluster's address, or a dask cluster of SLURM jobs started for the duration of the work."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmSettings:
    """One SLURM job = `processes` dask worker processes sharing `cores` and `memory`."""

    queue: str = ""  # partition (#SBATCH -p); "" = the cluster's default
    account: str = ""  # #SBATCH -A; "" = none
    cores: int = 4
    processes: int = 1
    memory: str = "8GB"
    walltime: str = "01:00:00"
    jobs: int = 2
    extra_directives: tuple[str, ...] = ()  # more #SBATCH lines, e.g. "--qos=normal"
    prologue: tuple[str, ...] = ()  # shell lines run before the worker, e.g. "source venv/bin/activate"
    interface: str = ""  # network interface of the scheduler and workers, e.g. "ib0"; "" = dask's choice
    log_directory: str = ""  # where the jobs' stdout and stderr go; "" = SLURM's default


def slurm_cluster(settings: SlurmSettings):
    """A dask_jobqueue.SLURMCluster with no jobs yet (its scheduler runs in this process;
    dask's jobqueue.slurm.* settings fill in what SlurmSettings does not say)."""
    from dask_jobqueue import SLURMCluster
    return SLURMCluster(queue=settings.queue or None, account=settings.account or None,
                        cores=settings.cores, processes=settings.processes, memory=settings.memory,
                        walltime=settings.walltime, job_extra_directives=list(settings.extra_directives),
                        job_script_prologue=list(settings.prologue), interface=settings.interface or None,
                        log_directory=settings.log_directory or None)


@contextmanager
def dask_scheduler(scheduler: str, slurm: SlurmSettings | None = None) -> Iterator[str]:
    """The scheduler for cache.blocks.run_blocks: "threads", "processes", "synchronous" and
    addresses ("tcp://host:8786") as they are; "slurm" submits `slurm.jobs` jobs of a
    SLURMCluster, yields its address, and cancels the jobs when the work is done."""
    if scheduler != "slurm":
        yield scheduler
        return
    slurm = slurm or SlurmSettings()
    with slurm_cluster(slurm) as cluster:
        cluster.scale(jobs=slurm.jobs)
        yield cluster.scheduler_address
