"""The training loop shared by students and the teacher's fine-tuning: seeded,
checkpointed every epoch, resumable; a student distills from the teacher's cache or, as
the reference the cache is judged against, from the teacher run online."""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import models
from cache.reader import TeacherCache
from cache.storage.files import atomic_path
from pipeline.data.imagestore import ImageStore
from pipeline.inference import predict_rows
from pipeline.runtime.device import Precision
from pipeline.runtime.prefetch import prefetch
from pipeline.training.distributed import Ranks
from pipeline.training.loader import Batch, TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.training.settings import TrainSettings

log = logging.getLogger(__name__)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def student_loss(net: torch.nn.Module, loss_fn: DistillationLoss,
                 autocast: Callable[[], AbstractContextManager] = nullcontext
                 ) -> Callable[[Batch], torch.Tensor]:
    """The loss of one batch: the student's outputs against the labels and, when the
    batch carries them, the cached teacher outputs. The forward runs under `autocast`,
    the loss in float32."""
    def loss_of(batch: Batch) -> torch.Tensor:
        with autocast():
            logits, features = net(batch.images)
        loss = loss_fn(logits.float(), batch.labels, batch.teacher_logits, features.float(), batch.teacher_features)
        return loss * batch.weight
    return loss_of


def teacher_targets(batches: Iterable[Batch], teacher: torch.nn.Module,
                    autocast: Callable[[], AbstractContextManager] = nullcontext) -> Iterator[Batch]:
    """Online distillation: each batch with the teacher's outputs (eval mode, float32) on
    the batch's own views, in place of cached ones."""
    teacher.eval()
    for batch in batches:
        with torch.no_grad(), autocast():
            logits, features = teacher(batch.images)
        yield batch._replace(teacher_logits=logits.float(), teacher_features=features.float())


def train_epoch(loss_of: Callable[[Batch], torch.Tensor], opt: torch.optim.Optimizer,
                batches: Iterable[Batch], lr: Callable[[int], float],
                scaler: torch.amp.GradScaler | None = None) -> list[float]:
    """One optimizer step per batch, step i at learning rate lr(i); returns the losses.
    `scaler` (fp16) scales the loss; None steps plainly. Shared by fit and the benchmark,
    so both time the same step."""
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    losses = []
    for i, batch in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr(i)
        loss = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())  # read once at the end: a GPU runs ahead meanwhile
    return torch.stack(losses).tolist() if losses else []


def fit(model: str, model_kwargs: dict, store: ImageStore, settings: TrainSettings, workdir: Path,
        cache: TeacherCache | None = None, distill: dict | None = None,
        init: bool | str = False, progress=None, device: torch.device = torch.device("cpu"),
        precision: Precision = Precision("fp32"), compile: bool = False,
        teacher: torch.nn.Module | None = None, ranks: Ranks = Ranks(),
        read_processes: int = 0) -> tuple[torch.nn.Module, list[dict]]:
    """Train `model` (a timm name and kwargs) on the store's train split and return it with
    its per-epoch history. With a cache, the loss is DistillationLoss(**distill) on the
    cached teacher outputs of the very views the student sees; with a `teacher` instead
    (online), on that teacher's outputs for the student's fresh random views, computed
    every batch; with neither, plain CE.
    `init` is False, True (timm pretrained) or a weights file. A rerun in the same
    workdir resumes from the last finished epoch and ends with identical weights.
    The model trains on `device` in `precision`, its forward torch.compiled if `compile`.
    In a data-parallel job (`ranks`, inside their process group) every rank calls fit: each
    trains on its share of every batch, the gradients averaged (DistributedDataParallel);
    rank 0 validates and checkpoints, and its history is the job's; a job resumes from the
    checkpoint with any number of ranks. `read_processes`: TrainLoader's."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    net = models.create(model, len(store.classes), pretrained=init, **model_kwargs)
    if cache is not None and teacher is not None:
        raise ValueError("distill from a cache or from a teacher online, not both")
    if cache is not None and (distill or {}).get("beta") and cache.eval_features is None:
        raise ValueError(f"[kd] beta = {distill['beta']} needs the teacher's features, and cache {cache.path} "
                         "was made without them (feature_dtype = none): set [kd] beta = 0 or cache features")
    teacher_dim = (cache.eval_features.shape[1] if cache is not None and cache.eval_features is not None
                   else teacher.num_features if teacher is not None else None)
    loss_fn = DistillationLoss(**(distill or {}), label_smoothing=settings.label_smoothing,
                               student_dim=net.num_features, teacher_dim=teacher_dim)
    net.to(device)
    loss_fn.to(device)
    if teacher is not None:
        teacher.to(device)
    params = list(net.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = precision.scaler(device)
    loader = TrainLoader(store, settings.image_size, settings.batch_size, settings.seed, cache,
                         settings.augment, device, ranks, settings.order, settings.order_window, read_processes,
                         settings.recipe)
    start, history = _resume(workdir / "train_state.pt", net, loss_fn, opt, scaler)
    total, warmup = settings.epochs * len(loader), round(settings.warmup_epochs * len(loader))
    val_rows = store.rows("val")
    autocast = lambda: precision.autocast(device)  # noqa: E731
    model, loss_module = parallel(net, ranks, device), parallel(loss_fn, ranks, device)
    loss_of = student_loss(torch.compile(model) if compile else model, loss_module, autocast)
    if progress:
        progress(start, settings.epochs)  # where the rate and time left are measured from
    for epoch in range(start, settings.epochs):
        tic, first = time.perf_counter(), epoch * len(loader)
        net.train()
        batches = prefetch(loader.epoch(epoch))
        if teacher is not None:
            batches = teacher_targets(batches, teacher, autocast)
        losses = train_epoch(loss_of, opt, batches, lambda i: lr_at(first + i, total, warmup, settings.lr), scaler)
        record = {"epoch": epoch + 1, "loss": float(np.mean(batch_means(losses, ranks, device))),
                  "seconds": round(time.perf_counter() - tic, 2)}
        if len(val_rows) and ranks.main:
            logits, _ = predict_rows(net, store, val_rows, settings.image_size, precision=precision)
            record["val_top1"] = float(np.mean(logits.argmax(1) == store.labels[val_rows]))
        history.append(record)
        if ranks.main:
            log.info("epoch %s", record)
            _save_state(workdir / "train_state.pt", net, loss_fn, opt, scaler, epoch + 1, history)
        if ranks.launched:
            dist.barrier()  # no rank runs ahead of the checkpoint it would resume from
        if progress:
            progress(epoch + 1, settings.epochs, describe(record))
    return net, history


def parallel(module: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """`module` as DistributedDataParallel in a data-parallel job (if it has parameters)."""
    if not ranks.launched or not any(p.requires_grad for p in module.parameters()):
        return module
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def batch_means(losses: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Each step's loss over the whole global batch: the ranks' weighted losses, averaged."""
    if not ranks.launched:
        return losses
    total = torch.tensor(losses, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return (total / ranks.world).tolist()


def describe(record: dict) -> str:
    """An epoch's history record for people: loss 1.2345, val top-1 45.6%, 12.3 s."""
    val = f", val top-1 {100 * record['val_top1']:.1f}%" if "val_top1" in record else ""
    return f"loss {record['loss']:.4f}{val}, {record['seconds']:.1f} s"


def _save_state(path: Path, net, loss_fn, opt, scaler, epoch: int, history: list) -> None:
    state = {"net": net.state_dict(), "loss": loss_fn.state_dict(), "opt": opt.state_dict(),
             "scaler": scaler.state_dict(), "epoch": epoch, "history": json.dumps(history),
             "rng": torch.get_rng_state()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, net, loss_fn, opt, scaler) -> tuple[int, list]:
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state["net"])
    loss_fn.load_state_dict(state["loss"])
    opt.load_state_dict(state["opt"])
    if state.get("scaler"):  # fp16 only; a disabled scaler's state is empty
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    log.info("resuming %s after epoch %d", path.parent, state["epoch"])
    return state["epoch"], json.loads(state["history"])


