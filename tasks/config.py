"""The experiment as luigi.cfg declares it. Each class is a section; any value can be
overridden on the command line, e.g. `--train-epochs 3`."""
from __future__ import annotations

import socket
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from pathlib import Path

import luigi
from luigi.configuration import get_config

from pipeline import cluster, gpus
from pipeline.cluster import SlurmSettings
from pipeline.device import PRECISIONS
from pipeline.spec import parse_names


class paths(luigi.Config):  # noqa: N801 (Luigi names a config section after its class)
    work = luigi.Parameter(default="work", description="folder for every output")


class data(luigi.Config):  # noqa: N801
    store_size = luigi.IntParameter(default=32, description="side of the stored square images")
    val_fraction = luigi.FloatParameter(default=0.1, description="train fraction held out for validation when a source has no val split")
    seed = luigi.IntParameter(default=0)
    on_bad_image = luigi.ChoiceParameter(default="fail", choices=["fail", "skip"])


class compute(luigi.Config):  # noqa: N801
    scheduler = luigi.Parameter(default="threads", description="dask scheduler: threads, processes, synchronous, a cluster address tcp://host:port, or slurm (a dask-jobqueue cluster, see [slurm])")
    workers = luigi.IntParameter(default=1, description="dask workers for decoding and the teacher pass")
    threads = luigi.IntParameter(default=0, description="torch threads per worker; 0 = torch's default")
    shard_rows = luigi.IntParameter(default=256, description="image rows per shard, the unit of parallel work")
    memory_budget_gb = luigi.FloatParameter(default=2.0, description="arrays up to this size are read into memory for training")
    device = luigi.Parameter(default="auto", description="where every model runs: auto (CUDA when present, else MPS, else CPU), cpu, cuda, cuda:N or mps; not part of any fingerprint")
    precision = luigi.ChoiceParameter(default="auto", choices=PRECISIONS, description="forward passes in fp32 or autocast to bf16 / fp16; auto = bf16 on CUDA, fp32 elsewhere; part of the fingerprints (it changes results)")
    compile = luigi.BoolParameter(default=False, description="torch.compile students and the teacher pass (needs a C++ compiler on the CPU, triton on CUDA)")
    gpus = luigi.Parameter(default="", description="the GPUs tasks share out, one each, e.g. cuda:0,cuda:2; empty = every GPU found (CUDA_VISIBLE_DEVICES honoured)")
    gpu_lock_dir = luigi.Parameter(default="", description="folder of the GPU locks; empty = [paths] work/.gpus/<host>")


class slurm(luigi.Config):  # noqa: N801
    """The SLURM jobs of [compute] scheduler = slurm (dask-jobqueue's SLURMCluster)."""
    queue = luigi.Parameter(default="", description="partition (#SBATCH -p); empty = the cluster's default")
    account = luigi.Parameter(default="", description="#SBATCH -A; empty = none")
    cores = luigi.IntParameter(default=4, description="cores per job")
    processes = luigi.IntParameter(default=1, description="dask worker processes per job, sharing its cores and memory")
    memory = luigi.Parameter(default="8GB", description="memory per job")
    walltime = luigi.Parameter(default="01:00:00")
    jobs = luigi.IntParameter(default=2, description="jobs submitted for each store or teacher pass")
    extra_directives = luigi.Parameter(default="", description="more #SBATCH options, one per line")
    prologue = luigi.Parameter(default="", description="shell lines each job runs before its workers, one per line")
    interface = luigi.Parameter(default="", description="network interface the scheduler and workers use, e.g. ib0")
    log_directory = luigi.Parameter(default="", description="folder for the jobs' output; empty = SLURM's default")

    def settings(self) -> SlurmSettings:
        values = {field.name: getattr(self, field.name) for field in fields(SlurmSettings)}
        for many in ("extra_directives", "prologue"):
            values[many] = tuple(line.strip() for line in values[many].splitlines() if line.strip())
        return SlurmSettings(**values)


def dask_scheduler(devices: Sequence[str] = ()) -> AbstractContextManager[str]:
    """[compute] scheduler for cache.blocks.run_blocks, as a context: with `slurm`, SLURM jobs
    from [slurm] serve as dask workers meanwhile; with `gpus`, one local worker process for
    each of `devices`."""
    scheduler = compute().scheduler
    return cluster.dask_scheduler(scheduler, slurm().settings() if scheduler == "slurm" else None,
                                  devices, gpu_lock_dir())


def device_gpus() -> list[str]:
    """The GPUs of [compute] device and gpus; [] for CPU work. Never initialises CUDA."""
    return gpus.device_gpus(compute().device, compute().gpus)


def gpu_lock_dir() -> Path:
    """Per host: GPU indices name different GPUs on different machines sharing a work folder."""
    return Path(compute().gpu_lock_dir or Path(paths().work) / ".gpus" / socket.gethostname())


def default_gpu_resource() -> None:
    """Unless luigi.cfg's [resources] says how many, as many `gpu` tasks at once as there are GPUs."""
    config = get_config()
    if not config.has_option("resources", "gpu") and (found := device_gpus()):
        if not config.has_section("resources"):
            config.add_section("resources")
        config.set("resources", "gpu", str(len(found)))


class teacher(luigi.Config):  # noqa: N801
    model = luigi.Parameter(default="convnext_atto", description="timm name and key=value kwargs")
    init = luigi.Parameter(default="scratch", description="fine-tuning starts from: scratch, pretrained (timm's weights) or a weights file")
    checkpoint = luigi.Parameter(default="", description="a finished teacher for this data set; skips fine-tuning")
    epochs = luigi.IntParameter(default=30)
    lr = luigi.FloatParameter(default=2e-3)
    views = luigi.IntParameter(default=8, description="random views cached per training image; 0 = the eval view only")
    stages = luigi.Parameter(default="", description="also cache the eval view's feature maps of these stages, e.g. 1,2 (timm feature indices)")
    seed = luigi.IntParameter(default=0)


class train(luigi.Config):  # noqa: N801
    epochs = luigi.IntParameter(default=8)
    batch_size = luigi.IntParameter(default=64)
    lr = luigi.FloatParameter(default=1e-3)
    weight_decay = luigi.FloatParameter(default=0.05)
    warmup_epochs = luigi.FloatParameter(default=1.0)
    image_size = luigi.IntParameter(default=32, description="input side for the teacher and the students")
    seed = luigi.IntParameter(default=0)
    augment = luigi.BoolParameter(default=True, description="random crops and flips for baseline and online training")
    modes = luigi.Parameter(default="baseline,kd", description="the modes every student trains in: baseline (labels only), kd (from the teacher cache), online (the teacher run on every batch)")


class kd(luigi.Config):  # noqa: N801
    alpha = luigi.FloatParameter(default=0.7)
    temperature = luigi.FloatParameter(default=4.0)
    beta = luigi.FloatParameter(default=0.0, description="weight of the feature-distillation term")
    feature_loss = luigi.ChoiceParameter(default="mse", choices=["mse", "cosine"])
    hard = luigi.BoolParameter(default=False, description="DeiT-style hard distillation")


class views_study(luigi.Config):  # noqa: N801
    """How many cached views a student needs: kd runs of a few students from caches of V views."""
    views = luigi.Parameter(default="", description="the view counts V compared, e.g. 0,8,32; empty = no study")
    students = luigi.Parameter(default="", description="the students of the study, e.g. vit,swin")


def modes() -> list[str]:
    return parse_names(train().modes)


def study_views() -> list[int]:
    """[views_study] views as integers; the config check has vouched for them."""
    return [int(v) for v in parse_names(views_study().views)]


def section(name: str) -> dict[str, str]:
    """A free-form section of luigi.cfg, e.g. [datasets] or [students], as name -> spec.
    An empty spec drops the name, so a file in LUIGI_CONFIG_PATH can switch off one that
    luigi.cfg declares (`demo =`)."""
    config = get_config()
    if not config.has_section(name):
        raise ValueError(f"luigi.cfg has no [{name}] section")
    specs = {key: config.get(name, key).strip() for key in config.options(name)}
    return {key: spec for key, spec in specs.items() if spec}


def datasets() -> dict[str, str]:
    return section("datasets")


def students() -> dict[str, str]:
    return section("students")
