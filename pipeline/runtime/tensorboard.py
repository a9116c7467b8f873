"""Run logs the field reads: each training run's epochs, and a report's test metrics as
hyperparameter runs, as TensorBoard event files (`tensorboard --logdir work/DATASET`)."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

LOGGERS = ("tensorboard", "none")
EVENTS = "tensorboard"  # the folder of a run's event files, beside its weights


class EpochLog(Protocol):
    def epoch(self, record: dict, lr: float, images_per_s: float) -> None:
        """One epoch's history record (its number, loss and val top-1), the learning rate it
        ended at and its training images a second."""

    def close(self) -> None:
        """Flush and close the files."""


class TensorBoardLog:
    """A run's epochs as TensorBoard scalars in folder/tensorboard, at step = the epoch: loss,
    learning rate and images/s under train/, top-1 under val/. A resumed run appends."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard's import: only where asked for
        self.writer = SummaryWriter(str(Path(folder) / EVENTS))

    def epoch(self, record: dict, lr: float, images_per_s: float) -> None:
        step = record["epoch"]
        for tag, value in (("train/loss", record["loss"]), ("train/lr", lr), ("train/images_per_s", images_per_s),
                           ("val/top1", record.get("val_top1"))):
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a stopped run keeps what it logged

    def close(self) -> None:
        self.writer.close()


class NoLog:
    """No run log: nothing written, nothing imported."""

    def epoch(self, record: dict, lr: float, images_per_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def epoch_log(logger: str, folder: Path) -> EpochLog:
    """The run log `logger` (one of LOGGERS) asks for, in `folder`."""
    if logger not in LOGGERS:
        raise ValueError(f"[train] logger = {logger!r}: use one of {', '.join(LOGGERS)}")
    return TensorBoardLog(folder) if logger == "tensorboard" else NoLog()


def write_hparams(folder: Path, runs: dict[str, tuple[dict, dict]]) -> None:
    """A report's runs as TensorBoard hyperparameter runs in folder/tensorboard: name ->
    (its settings, e.g. student and mode; its test metrics), for the HParams tab's table."""
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(Path(folder) / EVENTS)) as writer:
        for name, (settings, metrics) in runs.items():
            writer.add_hparams(settings, {f"test/{key}": value for key, value in metrics.items()}, run_name=name)
