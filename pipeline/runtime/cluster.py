"""Where the dask work (image store, teacher pass) runs: a local scheduler, a running dask
cluster's address, a dask cluster of SLURM jobs started for the duration of the work, or
a local dask cluster of one worker process per GPU."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from pipeline.runtime import gpus


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


class HoldGpu(WorkerPlugin):
    """Makes a dask worker process hold a GPU of its own from start to end (pipeline.runtime.gpus.held())."""

    def __init__(self, devices: list[str], lock_dir: Path):
        self.devices, self.lock_dir = devices, lock_dir

    def setup(self, worker) -> None:
        self.release = gpus.hold_for_life(self.devices, self.lock_dir, f"dask worker {worker.address}")

    def teardown(self, worker) -> None:
        self.release()


@contextmanager
def gpu_cluster(devices: list[str], lock_dir: Path, threads: int = 1) -> Iterator[str]:
    """A local dask cluster of one worker process per device, each holding its own device
    for its lifetime (the same locks as tasks take); yields its address."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=len(devices), threads_per_worker=threads, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(HoldGpu(devices, lock_dir))
        yield cluster.scheduler_address


@contextmanager
def dask_scheduler(scheduler: str, slurm: SlurmSettings | None = None, devices: Sequence[str] = (),
                   lock_dir: Path | None = None) -> Iterator[str]:
    """The scheduler for cache.storage.blocks.run_blocks: "threads", "processes", "synchronous" and
    addresses ("tcp://host:8786") as they are; "slurm" submits `slurm.jobs` jobs of a
    SLURMCluster, yields its address, and cancels the jobs when the work is done; "gpus" is
    gpu_cluster over `devices` and their locks in `lock_dir`, or "processes" for work given
    no devices (the image store)."""
    if scheduler == "gpus":
        if devices:
            with gpu_cluster(list(devices), lock_dir) as address:
                yield address
        else:
            yield "processes"
        return
    if scheduler != "slurm":
        yield scheduler
        return
    slurm = slurm or SlurmSettings()
    with slurm_cluster(slurm) as cluster:
        cluster.scale(jobs=slurm.jobs)
        yield cluster.scheduler_address
