"""A training run built from its setup: the model, its loss, optimizer, gradient scaler and
data loader, made in the one order that fixes their seeded initialisation. The tasks (through
their job) and the benchmark build every run here."""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

import torch

import models
from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.runtime.device import Precision
from pipeline.training.distributed import Ranks
from pipeline.training.loader import TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.training.settings import TrainSettings

# [teacher] init's words and what timm's `pretrained` makes of them; any other init is a weights file.
INITS = {"scratch": False, "pretrained": True}


@dataclass(frozen=True)
class Distill:
    """The distillation loss's terms: DistillationLoss's keyword arguments, as [kd] sets them."""
    alpha: float
    temperature: float
    beta: float
    feature_loss: str
    hard: bool


@dataclass(frozen=True)
class TrainSetup:
    """What a run trains and how: a timm model (name and kwargs) starting from `init`
    ("scratch", "pretrained" for timm's weights, or a weights file), its schedule, its loss
    (`distill`; None: labels only), the precision it trains in (a [compute] precision name),
    its forward torch.compiled if `compile`, TrainLoader's `read_processes`, the minutes
    between checkpoints within an epoch (0: at its end only), and the run log its epochs
    go to (runtime.tensorboard's LOGGERS)."""
    model: str
    kwargs: dict
    settings: TrainSettings
    distill: Distill | None = None
    init: str = "scratch"
    precision: str = "fp32"
    compile: bool = False
    read_processes: int = 0
    checkpoint_minutes: float = 0.0
    logger: str = "none"


@dataclass(frozen=True)
class TrainRun:
    """A run built and ready to train on `device`; `teacher` runs online on every batch, if
    given; in a data-parallel job (`ranks`) each rank holds its own, alike."""
    setup: TrainSetup
    store: ImageStore
    net: models.Net
    loss_fn: DistillationLoss
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: TrainLoader
    teacher: torch.nn.Module | None
    device: torch.device
    precision: Precision
    ranks: Ranks

    @property
    def settings(self) -> TrainSettings:
        """The run's schedule."""
        return self.setup.settings

    def autocast(self) -> AbstractContextManager:
        """The run's precision on its device, for a forward."""
        return self.precision.autocast(self.device)


def build_run(setup: TrainSetup, store: ImageStore, cache: TeacherCache | None = None,
              teacher: torch.nn.Module | None = None, device: torch.device = torch.device("cpu"),
              ranks: Ranks = Ranks()) -> TrainRun:
    """The run of `setup` on the store's train split: with a cache, its loss distills from the
    cached teacher outputs of the very views the student sees; with a `teacher` instead
    (online), from that teacher's outputs for the student's fresh views; with neither, plain CE.
    The seed is set first: the same setup builds the same weights."""
    check_targets(setup.distill, cache, teacher)
    settings = setup.settings
    torch.manual_seed(settings.seed)
    net = models.create(setup.model, len(store.classes), pretrained=INITS.get(setup.init, setup.init),
                        **setup.kwargs)
    loss_fn = DistillationLoss(**(asdict(setup.distill) if setup.distill else {}),
                               label_smoothing=settings.label_smoothing, student_dim=net.num_features,
                               teacher_dim=teacher_dim(cache, teacher))
    net.to(device)
    loss_fn.to(device)
    if teacher is not None:
        teacher.to(device)
    params = list(net.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    precision = Precision(setup.precision)
    scaler = precision.scaler(device)
    loader = TrainLoader(store, settings.image_size, settings.batch_size, settings.seed, cache,
                         settings.augment, device, ranks, settings.order, settings.order_window, setup.read_processes,
                         settings.recipe)
    return TrainRun(setup, store, net, loss_fn, opt, scaler, loader, teacher, device, precision, ranks)


def check_targets(distill: Distill | None, cache: TeacherCache | None, teacher: torch.nn.Module | None) -> None:
    """Refuse a cache and an online teacher together, and a feature term from a cache without features."""
    if cache is not None and teacher is not None:
        raise ValueError("distill from a cache or from a teacher online, not both")
    if cache is not None and distill is not None and distill.beta and cache.eval_features is None:
        raise ValueError(f"[kd] beta = {distill.beta} needs the teacher's features, and cache {cache.path} "
                         "was made without them (feature_dtype = none): set [kd] beta = 0 or cache features")


def teacher_dim(cache: TeacherCache | None, teacher: torch.nn.Module | None) -> int | None:
    """The width of the teacher's features the loss's projector maps to, if there are any."""
    if cache is not None and cache.eval_features is not None:
        return cache.eval_features.shape[1]
    return teacher.num_features if teacher is not None else None
