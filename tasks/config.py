"""The experiment's settings: each class is a section of luigi.cfg. Every default is
written once, in luigi.cfg, never here; each key's description= is its one documentation
(`python -m tasks.settings_doc` lists them in docs/configuration.md). Any value can be
overridden on the command line, e.g. `--train-epochs 3`, or by a file in LUIGI_CONFIG_PATH."""
from __future__ import annotations

import socket
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.configuration import get_config

from cache.compact import FEATURE_DTYPES
from cache.schema import AUTO_RANK, LOGIT_DTYPES, TAILS
from pipeline.checks import Range
from pipeline.data.imagestore import IMAGE_FORMATS
from pipeline.runtime import cluster, gpus
from pipeline.runtime.cluster import SlurmSettings
from pipeline.runtime.device import PRECISIONS
from pipeline.runtime.tensorboard import LOGGERS
from pipeline.spec import parse_caches, parse_names, parse_randaugment
from pipeline.training.loader import ORDERS
from pipeline.training.settings import TrainSettings
from pipeline.views.records import Recipe

Param = TypeVar("Param", bound=luigi.Parameter)


def ranged(valid: Range, param: Param) -> Param:
    """`param`, declaring the Range its values must lie in: the one table of ranges is these
    declarations, which the configuration check (tasks/check.py declared_ranges) collects to
    name each value outside its range with the key and the range, among every other problem.
    Every Int and Float parameter has one (tests/test_checks_every_key.py). Not Luigi's
    NumericalParameter: it needs an upper bound for every key and refuses a value inside
    parsing, where a task would fail on first reading it, with a message that names no key."""
    param.range = valid
    return param


class paths(luigi.Config):  # noqa: N801 (Luigi names a config section after its class)
    work = luigi.Parameter(description="folder for every output")


class data(luigi.Config):  # noqa: N801
    store_size = ranged(Range(1), luigi.IntParameter(description="side of the stored square images, in pixels"))
    val_fraction = ranged(Range(0, 1, high_open=True), luigi.FloatParameter(
        description="fraction of train held out for validation when a source has no val split"))
    seed = ranged(Range(0), luigi.IntParameter(description="seed of that validation split"))
    on_bad_image = luigi.ChoiceParameter(
        choices=["fail", "skip"],
        description="images that cannot be decoded stop the run, every one named, once all are tried (fail), "
                    "or are left out and recorded (skip)")
    image_format = luigi.ChoiceParameter(
        choices=IMAGE_FORMATS,
        description="the image store keeps each square image as uint8 pixels (raw) or as one JPEG (jpeg: "
                    "about a sixth of the bytes at 128 px, decoded on every read)")
    jpeg_quality = ranged(Range(1, 100),
                          luigi.IntParameter(description="JPEG quality, 1 to 100, of a jpeg image store"))
    shuffle_rows = luigi.BoolParameter(
        description="write the store's rows in a seeded random order, not the source's (an image folder's "
                    "is class by class); a recipe that mixes ([train] or [teacher] mixup or cutmix) and "
                    "the shards order (auto's too) get such a store whatever this says, as both draw an "
                    "image's neighbours from a few shards; part of the store's fingerprint only when shuffled")
    chunk_rows = ranged(Range(1), luigi.IntParameter(
        description="images per chunk of the image store, the unit zarr reads, decodes and checks: 16 or more "
                    "suits the shards order (a shard read then decodes far fewer chunks), 1 random reads from "
                    "disk (each pays for its whole chunk), which [train] order = auto never makes; in memory "
                    "either serves; divides [compute] shard_rows; the pixels are the same either way, so "
                    "not part of the store's fingerprint (a finished store keeps the chunks it has)"))


class compute(luigi.Config):  # noqa: N801
    scheduler = luigi.Parameter(
        description="where the image store and the teacher pass run: dask's threads, processes or "
                    "synchronous; a dask cluster's address tcp://host:port; slurm (dask workers in SLURM "
                    "jobs, see [slurm]); or gpus (the teacher pass on one local worker process per GPU)")
    workers = ranged(Range(1), luigi.IntParameter(description="dask workers for decoding and the teacher pass"))
    threads = ranged(Range(0), luigi.IntParameter(description="torch threads per worker; 0 = torch's default"))
    shard_rows = ranged(Range(1), luigi.IntParameter(
        description="image rows per shard, the unit of parallel work; a store or cache resumed keeps the shards "
                    "it was started with (delete it to change them)"))
    memory_budget_gb = ranged(Range(0), luigi.FloatParameter(
        description="arrays up to this size are read into memory for training; larger ones are read from disk"))
    read_processes = ranged(Range(0), luigi.IntParameter(
        description="in the shards order, processes that make the windows' batches, that many windows at "
                    "a time: read the store's and the cache's shards, decode a jpeg store's images and, on "
                    "the CPU, render the views (each then holds a window's rendered images, order_window x "
                    "shard_rows x 3 x image_size^2 x 4 bytes; a GPU renders them itself); 0 = the loader's "
                    "own thread (on a GPU, jpeg then decodes there, by nvJPEG); not part of any fingerprint"))
    device = luigi.Parameter(
        description="where every model runs: auto (CUDA when present, else MPS, else CPU), cpu, cuda, "
                    "cuda:N or mps; not part of any fingerprint")
    precision = luigi.ChoiceParameter(
        choices=PRECISIONS,
        description="forward passes in fp32 or autocast to bf16 / fp16; auto = bf16 on CUDA, fp32 "
                    "elsewhere; part of the fingerprints (it changes results)")
    compile = luigi.BoolParameter(
        description="torch.compile the students and the teacher pass (a C++ compiler on the CPU, triton on CUDA)")
    gpus = luigi.Parameter(
        description="the GPUs tasks share out, one each, e.g. cuda:0,cuda:2; empty = every GPU found "
                    "(CUDA_VISIBLE_DEVICES honoured)")
    gpu_lock_dir = luigi.Parameter(description="folder of the GPU locks; empty = [paths] work/.gpus/<host>")


class slurm(luigi.Config):  # noqa: N801
    """The SLURM jobs of [compute] scheduler = slurm (dask-jobqueue's SLURMCluster)."""
    queue = luigi.Parameter(description="partition (#SBATCH -p); empty = the cluster's default")
    account = luigi.Parameter(description="#SBATCH -A; empty = none")
    cores = ranged(Range(1), luigi.IntParameter(description="cores per job"))
    processes = ranged(Range(1), luigi.IntParameter(
        description="dask worker processes per job, sharing its cores and memory; at most cores"))
    memory = luigi.Parameter(
        description="memory per job; --mem gets whole GiB, rounded up (16GB: 15G, 16GiB: 16G)")
    walltime = luigi.Parameter(description="time limit per job, HH:MM:SS (or SLURM's other forms: MM, D-HH:MM:SS)")
    jobs = ranged(Range(1), luigi.IntParameter(
        description="jobs submitted for each image store or teacher pass, cancelled after it"))
    extra_directives = luigi.Parameter(
        description="more #SBATCH options, one per line, each as sbatch takes it, e.g. --qos=normal or "
                    "--gres=gpu:1 (write % as %%)")
    prologue = luigi.Parameter(
        description="shell lines each job runs before its workers, one per line, e.g. "
                    "source ~/venvs/kdcache/bin/activate")
    interface = luigi.Parameter(description="network interface the scheduler and workers use, e.g. ib0")
    log_directory = luigi.Parameter(description="folder for the jobs' output; empty = SLURM's default")

    def settings(self) -> SlurmSettings:
        values = {field.name: getattr(self, field.name) for field in fields(SlurmSettings)}
        for many in ("extra_directives", "prologue"):
            values[many] = tuple(line.strip() for line in values[many].splitlines() if line.strip())
        return SlurmSettings(**values)


def dask_scheduler(devices: Sequence[str] = ()) -> AbstractContextManager[str]:
    """[compute] scheduler for cache.storage.blocks.run_blocks, as a context: with `slurm`, SLURM jobs
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
    """Unless luigi.cfg's [resources] says how many, as many `gpu` tasks at once as there are GPUs.
    Without [compute] settings (no luigi.cfg where the command started) it does nothing, so
    that the configuration check, not an import, says what is missing."""
    config = get_config()
    if not config.has_option("compute", "device"):
        return
    if not config.has_option("resources", "gpu") and (found := device_gpus()):
        if not config.has_section("resources"):
            config.add_section("resources")
        config.set("resources", "gpu", str(len(found)))


class RecipeKeys:
    """The training recipe's keys, which [train] (the students') and [teacher] (its fine-tuning)
    each have; part of the fingerprints only where not off."""
    randaugment = luigi.Parameter(
        description="N,M: N RandAugment operations per random view, magnitude M of 10 (DeiT: 2,9); "
                    "empty = none")
    mixup = ranged(Range(0), luigi.FloatParameter(description="mixup's Beta alpha (DeiT: 0.8); 0 = no mixup"))
    cutmix = ranged(Range(0), luigi.FloatParameter(description="cutmix's Beta alpha (DeiT: 1.0); 0 = no cutmix"))
    mix_prob = ranged(Range(0, 1), luigi.FloatParameter(
        description="probability that a random view is mixed with its partner, another training image of "
                    "its store shard (a store then in a seeded random order, see [data] shuffle_rows)"))
    switch_prob = ranged(Range(0, 1), luigi.FloatParameter(
        description="with mixup and cutmix both on: probability of cutmix"))
    label_smoothing = ranged(Range(0, 1, high_open=True),
                             luigi.FloatParameter(description="label smoothing of the label term"))


def recipe(keys: RecipeKeys) -> Recipe:
    """The recipe a section's keys describe; the config check has vouched for them."""
    return Recipe(parse_randaugment(keys.randaugment), keys.mixup, keys.cutmix, keys.mix_prob, keys.switch_prob)


class teacher(RecipeKeys, luigi.Config):  # noqa: N801
    """The teacher; its fine-tuning draws views by its own recipe keys, its cache by [train]'s."""
    model = luigi.Parameter(description="a timm ConvNeXt name and key=value kwargs")
    init = luigi.Parameter(
        description="fine-tuning starts from: scratch, pretrained (timm's weights) or a local weights file")
    checkpoint = luigi.Parameter(description="a finished teacher for this data set; skips fine-tuning")
    epochs = ranged(Range(0), luigi.IntParameter(description="fine-tuning epochs"))
    lr = ranged(Range(0, low_open=True), luigi.FloatParameter(description="fine-tuning learning rate"))
    views = ranged(Range(0), luigi.IntParameter(
        description="random views cached per training image; 0 = the eval view only"))
    topk = ranged(Range(0), luigi.IntParameter(
        description="cache only the K largest logits of each view, with the rest as `tail` says; "
                    "0 = every class (as logit_dtype), or with tail = sampled, none kept exactly"))
    tail = luigi.ChoiceParameter(
        choices=TAILS,
        description="the logits outside the top-k: flat (their logsumexp, spread evenly), tempered (the same "
                    "at [kd] temperature, so the rebuilt tail has its true mass there) or sampled (`samples` "
                    "classes drawn from it at [kd] temperature: an unbiased kd target)")
    samples = ranged(Range(0, 65535), luigi.IntParameter(
        description="with tail = sampled, classes drawn from each view's tail"))
    logit_dtype = luigi.ChoiceParameter(
        choices=LOGIT_DTYPES,
        description="every logit (topk = 0) as float16, or int8 or int4 with a float16 scale and offset per view, "
                    "or head: none stored, each view's features through the teacher's classifier (bytes grow "
                    "with the feature width, not the classes); auto = float16 up to as many classes as the rank "
                    f"(logit_rank, or {AUTO_RANK} at 0), int8 in that rank beyond")
    logit_rank = ranged(Range(0), luigi.IntParameter(
        description="with topk = 0 and logit_dtype float16, int8 or int4 (else unused): keep each view's logits as "
                    "its features' coordinates on the classifier's m leading directions (m numbers a view, whatever "
                    "the classes and the feature width; at most min(classes, width)); 0 = every logit itself"))
    logit_lead = ranged(Range(0), luigi.IntParameter(
        description="with logit_rank: its first coordinates, those the classifier weighs most, kept as float16 "
                    "(the rest as logit_dtype)"))
    feature_dtype = luigi.ChoiceParameter(
        choices=("auto", *FEATURE_DTYPES),
        description="cached features and stage maps as float16, int8 or int4 (with one float16 scale per "
                    "vector), or none (no features: for [kd] beta = 0); auto = float16 where [kd] beta > 0, "
                    "stages are asked for or logit_dtype = head, else none")
    stages = luigi.Parameter(
        description="also cache the eval view's feature maps of these stages, e.g. 1,2 (timm feature "
                    "indices); empty = none")
    seed = ranged(Range(0),
                  luigi.IntParameter(description="seed of the teacher's initialisation, fine-tuning and views"))


class train(RecipeKeys, luigi.Config):  # noqa: N801
    """The training loop of every student; the teacher's fine-tuning shares all but epochs, lr, seed and
    the recipe keys. The students' recipe is also the one the teacher's cached views are drawn by."""
    epochs = ranged(Range(1), luigi.IntParameter(description="training epochs of each student"))
    batch_size = ranged(Range(1), luigi.IntParameter(description="images per step (the teacher pass uses 4x)"))
    lr = ranged(Range(0, low_open=True),
                luigi.FloatParameter(description="peak learning rate (AdamW, linear warm-up, cosine decay)"))
    weight_decay = ranged(Range(0), luigi.FloatParameter(description="AdamW weight decay"))
    warmup_epochs = ranged(Range(0), luigi.FloatParameter(description="epochs of linear learning-rate warm-up"))
    image_size = ranged(Range(1), luigi.IntParameter(description="input side for the teacher and the students"))
    seed = ranged(Range(0), luigi.IntParameter(description="seed of the students' initialisation and image order"))
    augment = luigi.BoolParameter(description="random crops and flips for baseline and online training")
    order = luigi.ChoiceParameter(
        choices=ORDERS,
        description="each epoch's image order: random (a permutation of all, each batch read where it lies), "
                    "shards (the image store's shards shuffled and read whole, order_window at a time, "
                    "the images of a window shuffled: reads from disk far faster; a batch then mixes only a "
                    "window's images, so the store is written in a seeded random order, see [data] "
                    "shuffle_rows), or auto: shards where the store's decoded images (images x "
                    "[data] store_size^2 x 3 bytes) exceed [compute] memory_budget_gb, so it is read from "
                    "disk, else random; the views and targets of each image and epoch are the same in all; "
                    "part of the fingerprints, as resolved, only when shards")
    order_window = ranged(Range(1), luigi.IntParameter(
        description="shards order: shards per window, read whole and held in memory while in use"))
    checkpoint_minutes = ranged(Range(0), luigi.FloatParameter(
        description="minutes between checkpoints within an epoch, from which a stopped run resumes "
                    "(0 = at epoch ends only); not part of any fingerprint"))
    logger = luigi.ChoiceParameter(
        choices=LOGGERS,
        description="where every training run logs its epochs (loss, learning rate, images/s, val top-1) and the "
                    "report its test metrics: tensorboard (event files beside each run's weights: "
                    "`tensorboard --logdir work/DATASET`) or none; not part of any fingerprint")
    modes = luigi.Parameter(
        description="the modes every student trains in: baseline (labels only), kd (from the teacher "
                    "cache), online (the teacher run on every batch)")
    processes = ranged(Range(1), luigi.IntParameter(
        description="data-parallel processes (ranks) per node that train one student or the teacher, "
                    "through torchrun, one GPU each on GPUs; 1 = one process; not part of any fingerprint"))
    nodes = ranged(Range(1),
                   luigi.IntParameter(description="nodes of such a job, started by srun inside a SLURM allocation"))
    rdzv_endpoint = luigi.Parameter(
        description="host:port where the ranks of several nodes meet (the first node), needed when nodes > 1; "
                    "unused on one node")


class kd(luigi.Config):  # noqa: N801
    """What mode kd (and online) means; part of those students' identity."""
    alpha = ranged(Range(0, 1), luigi.FloatParameter(
        description="weight of the distillation term; 1 - alpha weighs the labels"))
    temperature = ranged(Range(0, low_open=True),
                         luigi.FloatParameter(description="softmax temperature T of both distributions"))
    beta = ranged(Range(0), luigi.FloatParameter(description="weight of the feature-distillation term; 0 = none"))
    feature_loss = luigi.ChoiceParameter(
        choices=["mse", "cosine"], description="the feature term, through a learned projector")
    hard = luigi.BoolParameter(description="DeiT-style hard distillation: CE on the teacher's argmax")


class cache_study(luigi.Config):  # noqa: N801
    """What a cache may leave out: kd runs of a few students from caches that differ from
    [teacher]'s in views, how the logits are kept or feature dtype, each against the main cache's kd run."""
    caches = luigi.Parameter(
        description="the caches compared, one per line or separated by ';', each as [teacher] keys "
                    "views, topk, tail, samples, logit_dtype, logit_rank, logit_lead, feature_dtype, e.g. views=0; "
                    "topk=5; topk=10 tail=sampled samples=32; logit_dtype=int8; empty = no study")
    students = luigi.Parameter(description="the students of the study, e.g. vit,swin")


SECTIONS = (paths, data, compute, slurm, teacher, train, kd, cache_study)  # every section of settings


def train_settings(section: RecipeKeys | None = None, **overrides) -> TrainSettings:
    """[train] as the training loop's settings, with the recipe of `section` (default [train]);
    `overrides` replace fields (the teacher's epochs, lr and seed)."""
    section = section or train()
    values = {field.name: getattr(train(), field.name) for field in fields(TrainSettings) if field.name != "recipe"}
    values.update(recipe=recipe(section), label_smoothing=section.label_smoothing)
    return TrainSettings(**{**values, **overrides})


def modes() -> list[str]:
    return parse_names(train().modes)


def study_caches() -> list[dict]:
    """[cache_study] caches as settings; the config check has vouched for them."""
    return parse_caches(cache_study().caches)


def section(name: str) -> dict[str, str]:
    """A free-form section of luigi.cfg, e.g. [datasets] or [students], as name -> spec.
    An empty spec drops the name, so a file in LUIGI_CONFIG_PATH can switch off one that
    luigi.cfg declares (`demo =`)."""
    if not get_config().has_section(name):
        raise ValueError(f"luigi.cfg has no [{name}] section")
    specs = {key: spec.strip() for key, spec in keys_given(name).items()}
    return {key: spec for key, spec in specs.items() if spec}


def keys_given(name: str, raw: bool = False) -> dict[str, str]:
    """The keys the configuration files give section `name` ({} if none), with their values,
    interpolated unless `raw`. [DEFAULT]'s keys, which configparser lends every section, are
    left out: they serve all sections (e.g. for interpolation) and are no setting of one."""
    config = get_config()
    if not config.has_section(name):
        return {}
    shared = config.defaults()
    return {key: config.get(name, key, raw=raw) for key in config.options(name) if key not in shared}


def command_line_value(section: str, key: str) -> str | None:
    """The value given on the command line as --<section>-<key>; None when not given (or
    when not run by `luigi`)."""
    # An empty value (or a bool flag left off) counts as not given, as Luigi reads a parameter's value.
    given = _luigi_cmdline_arg(section, key)
    if given is True:  # a bool flag (--kd-hard), shown as luigi.cfg writes it
        return "true"
    return str(given) if given else None


def _luigi_cmdline_arg(section: str, key: str) -> str | bool | None:
    """What Luigi's command-line parser holds for --<section>-<key> (None where there is no
    parser or no such option). Luigi has no public API that tells a value given on the
    command line from one in a file, so this reads its internals, as in Luigi 3.8.1: the
    parser of luigi.cmdline_parser ("internal to luigi") and the private naming rule of its
    arguments, Parameter._parser_global_dest."""
    parser = CmdlineParser.get_instance()
    return getattr(parser.known_args, luigi.Parameter._parser_global_dest(key, section), None) if parser else None


def datasets() -> dict[str, str]:
    return section("datasets")


def students() -> dict[str, str]:
    return section("students")
