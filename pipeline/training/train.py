"""The training loop shared by students and the teacher's fine-tuning, in steps: a built run
(pipeline/training/build.py) resumed from its checkpoint, then epoch by epoch trained,
validated and checkpointed; a student distills from the teacher's cache or, as the reference
the cache is judged against, from the teacher run online."""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cache.storage.files import atomic_write_with
from pipeline.inference import predict_rows
from pipeline.runtime.prefetch import prefetch
from pipeline.runtime.progress import duration
from pipeline.runtime.tensorboard import epoch_log
from pipeline.training.build import TrainRun
from pipeline.training.distributed import Ranks
from pipeline.training.loader import Batch
from pipeline.training.losses import DistillationLoss

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


class Underway(NamedTuple):
    """An epoch as far as it went: its steps' losses (each the mean over the ranks) and its
    seconds; what a checkpoint taken within the epoch holds, and a resumed epoch goes on from."""
    losses: list[float] = []
    seconds: float = 0.0


class StepLosses:
    """Each step's loss, kept where it was computed and read once (`values`), at the end: a GPU
    runs ahead meanwhile. Kept in preallocated blocks, not a tensor a step: those small blocks,
    held for the epoch, land between a CPU step's large ones in glibc's heap, which could then
    reuse none of them: a student's memory grew with its steps (docs/results.md)."""

    def __init__(self, block: int = 1024):
        self.block, self.blocks, self.count = block, [], 0

    def add(self, loss: torch.Tensor) -> None:
        if self.count % self.block == 0:
            self.blocks.append(torch.empty(self.block, device=loss.device))
        self.blocks[-1][self.count % self.block] = loss.detach()
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def values(self) -> list[float]:
        return torch.cat(self.blocks)[:self.count].tolist() if self.blocks else []


def train_epoch(loss_of: Callable[[Batch], torch.Tensor], opt: torch.optim.Optimizer,
                batches: Iterable[Batch], lr: Callable[[int], float],
                scaler: torch.amp.GradScaler | None = None, start: int = 0,
                after_step: Callable[[StepLosses], object] | None = None) -> list[float]:
    """One optimizer step per batch, the batches being steps `start`, start + 1, ... of the
    epoch, step i at learning rate lr(i); returns their losses. `scaler` (fp16) scales the
    loss; None steps plainly. `after_step` hears of the losses so far after each step. Shared
    by fit and the benchmark, so both time the same step."""
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    losses = StepLosses()
    for i, batch in enumerate(batches, start):
        for group in opt.param_groups:
            group["lr"] = lr(i)
        loss = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.add(loss)
        if after_step:
            after_step(losses)
    return losses.values()


def fit(run: TrainRun, workdir: Path, progress: Callable[..., object] | None = None) -> list[dict]:
    """Train the run to its last epoch and return its per-epoch history: each epoch trained,
    validated and checkpointed in `workdir`, and checkpointed within an epoch every
    `checkpoint_minutes` of the setup (an epoch over a million images takes an hour); a
    rerun resumes from the last checkpoint and ends with identical weights. In a
    data-parallel job every rank calls fit: each trains on its share of every batch, the
    gradients averaged (DistributedDataParallel); rank 0 validates and checkpoints, and its
    history is the job's; a job resumes from the checkpoint with any number of ranks.
    `progress(done, total, text)` hears of each epoch and, at most once a minute, of the
    batches done in the epoch under way; rank 0 logs each epoch as the setup's `logger` asks
    (TensorBoard events in `workdir`)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "train_state.pt"
    start, history, underway = resume(state, run)
    loss_of = step_loss(run)  # after the resume: DDP starts every rank from rank 0's weights
    if progress:
        progress(start, run.settings.epochs)  # where the rate and time left are measured from
    with closing(epoch_log(run.setup.logger if run.ranks.main else "none", workdir)) as events:
        for epoch in range(start, run.settings.epochs):
            history.append(run_epoch(run, loss_of, epoch, progress, underway,
                                     lambda so_far: checkpoint(state, run, history, so_far)))
            underway = Underway()
            checkpoint(state, run, history)
            events.epoch(history[-1], run.opt.param_groups[0]["lr"],
                         len(run.loader.rows) / max(history[-1]["seconds"], 1e-9))
            if progress:
                progress(epoch + 1, run.settings.epochs, describe(history[-1]))
    return history


def step_loss(run: TrainRun) -> Callable[[Batch], torch.Tensor]:
    """The loss of one batch as the run steps: its model (and loss) data-parallel in a job of
    ranks, the model's forward torch.compiled if the setup asks."""
    model, loss_module = parallel(run.net, run.ranks, run.device), parallel(run.loss_fn, run.ranks, run.device)
    return student_loss(torch.compile(model) if run.setup.compile else model, loss_module, run.autocast)


def schedule(run: TrainRun, epoch: int) -> Callable[[int], float]:
    """The learning rate of step i of `epoch` (from 0): lr_at over the run's whole schedule."""
    steps = len(run.loader)
    total, warmup = run.settings.epochs * steps, round(run.settings.warmup_epochs * steps)
    return lambda i: lr_at(epoch * steps + i, total, warmup, run.settings.lr)


def epoch_losses(run: TrainRun, loss_of: Callable[[Batch], torch.Tensor], epoch: int,
                 progress: Callable[..., object] | None = None, underway: Underway = Underway(),
                 save: Callable[[Underway], object] | None = None) -> Underway:
    """Train `epoch` (from 0), a step of `loss_of` per batch of the loader's views, the online
    teacher's outputs added if the run has one, from the step after those `underway` holds
    (trained before a stop); returns the whole epoch's. `progress` hears of the batches done
    (an epoch over a million images is a long silence otherwise); `save` gets the epoch so
    far every `checkpoint_minutes` of the setup."""
    run.net.train()
    tic, done = time.perf_counter(), len(underway.losses)
    batches = prefetch(run.loader.epoch(epoch, start=done))
    if progress:
        batches = noted(batches, lambda note: progress(epoch, run.settings.epochs, f"epoch {epoch + 1}: {note}"),
                        len(run.loader), start=done)
    if run.teacher is not None:
        batches = teacher_targets(batches, run.teacher, run.autocast)

    def so_far(losses: list[float]) -> Underway:
        return Underway(underway.losses + batch_means(losses, run.ranks, run.device),
                        underway.seconds + time.perf_counter() - tic)

    due = every(60 * run.setup.checkpoint_minutes, run.ranks, run.device)

    def saved(losses: StepLosses) -> None:
        if save and due(len(losses)):
            save(so_far(losses.values()))

    return so_far(train_epoch(loss_of, run.opt, batches, schedule(run, epoch), run.scaler,
                               start=done, after_step=saved))


def every(seconds: float, ranks: Ranks, device: torch.device, sync_steps: int = 8) -> Callable[[int], bool]:
    """A clock asked after each step (with the steps done) that says True once `seconds`
    have passed since it last did (or began); 0 seconds: never. In a data-parallel job it
    answers every rank alike, as rank 0's clock says, and asks it after every `sync_steps`
    steps only: the broadcast makes the host wait for the device."""
    last = time.monotonic()

    def due(steps: int) -> bool:
        nonlocal last
        if seconds <= 0 or (ranks.launched and steps % sync_steps):
            return False
        said = time.monotonic() - last >= seconds
        if ranks.launched:
            flag = torch.tensor(float(said), device=device)
            dist.broadcast(flag, 0)  # every rank checkpoints after the same step, or none does
            said = bool(flag.item())
        if said:
            last = time.monotonic()
        return said
    return due


def noted(batches: Iterable[Batch], note: Callable[[str], object], total: int, every: float = 60.0,
          start: int = 0) -> Iterator[Batch]:
    """The batches, those of an epoch after its first `start`; after one is used,
    `note("batches i/total, ETA ...")` if `every` seconds have passed since they began or the last note."""
    began = last = time.monotonic()
    for i, batch in enumerate(batches, start + 1):
        yield batch
        if (now := time.monotonic()) - last >= every and i < total:
            note(f"batches {i}/{total}, ETA {duration((now - began) / (i - start) * (total - i))}")
            last = now


def run_epoch(run: TrainRun, loss_of: Callable[[Batch], torch.Tensor], epoch: int,
              progress: Callable[..., object] | None = None, underway: Underway = Underway(),
              save: Callable[[Underway], object] | None = None) -> dict:
    """Train `epoch` (from 0), going on from `underway`, and, on rank 0, validate: the
    epoch's history record."""
    trained = epoch_losses(run, loss_of, epoch, progress, underway, save)
    record = {"epoch": epoch + 1, "loss": float(np.mean(trained.losses)), "seconds": round(trained.seconds, 2)}
    val_rows = run.store.rows("val")
    if len(val_rows) and run.ranks.main:
        record["val_top1"] = val_top1(run, val_rows)
    return record


def val_top1(run: TrainRun, rows: np.ndarray) -> float:
    """The net's top-1 accuracy on store `rows` under the eval view."""
    logits, _ = predict_rows(run.net, run.store, rows, run.settings.image_size, precision=run.precision)
    return float(np.mean(logits.argmax(1) == run.store.labels[rows]))


def checkpoint(path: Path, run: TrainRun, history: list[dict], underway: Underway | None = None) -> None:
    """Rank 0 saves the run's state to `path`: after the epoch just ended (and logs it), or
    after the steps of the epoch `underway`."""
    if run.ranks.main:
        if underway is None:
            log.info("epoch %s", history[-1])
        else:
            log.info("checkpoint after step %d of epoch %d", len(underway.losses), len(history) + 1)
        save_state(path, run, history, underway or Underway())
    if run.ranks.launched:
        dist.barrier()  # no rank runs ahead of the checkpoint it would resume from


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


def save_state(path: Path, run: TrainRun, history: list[dict], underway: Underway = Underway()) -> None:
    """The run's state after the epochs of `history` and the steps `underway` of the next:
    what resume reads back."""
    state = {"net": run.net.state_dict(), "loss": run.loss_fn.state_dict(), "opt": run.opt.state_dict(),
             "scaler": run.scaler.state_dict(), "epoch": len(history), "history": json.dumps(history),
             "underway": json.dumps(underway._asdict()), "rng": torch.get_rng_state()}
    atomic_write_with(path, lambda file: torch.save(state, file))


def resume(path: Path, run: TrainRun) -> tuple[int, list[dict], Underway]:
    """The epochs done, their history and the steps done of the next, the run restored to
    its state after them, if `path` holds a checkpoint; (0, [], Underway()) if not."""
    if not path.exists():
        return 0, [], Underway()
    state = torch.load(path, map_location="cpu", weights_only=True)
    run.net.load_state_dict(state["net"])
    run.loss_fn.load_state_dict(state["loss"])
    run.opt.load_state_dict(state["opt"])
    if state.get("scaler"):  # fp16 only; a disabled scaler's state is empty
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    underway = Underway(**json.loads(state.get("underway", "{}")))  # none in checkpoints of before
    steps = f", step {len(underway.losses)} of the next" if underway.losses else ""
    log.info("resuming %s after epoch %d%s", path.parent, state["epoch"], steps)
    return state["epoch"], json.loads(state["history"]), underway
