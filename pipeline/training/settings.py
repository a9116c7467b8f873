"""A training run's schedule, and the part of it a run's fingerprint holds."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.views.records import Recipe


@dataclass(frozen=True)
class TrainSettings:
    """One training run's schedule; no defaults here: the tasks fill it from luigi.cfg's [train]."""
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    image_size: int
    seed: int
    augment: bool
    order: str          # TrainLoader's: random or shards
    order_window: int   # shards read at a time in shards order
    recipe: Recipe      # how random views are drawn: RandAugment, mixup, cutmix
    label_smoothing: float  # of the label term

    def __post_init__(self) -> None:
        if isinstance(self.recipe, dict):  # read back from a job's JSON
            object.__setattr__(self, "recipe", Recipe(**self.recipe))


def identity(settings: TrainSettings) -> dict:
    """The settings as a run's fingerprint holds them: all but the order while it is random
    and the recipe and label smoothing while they are off, as before they could be chosen,
    so that such runs keep their fingerprints."""
    values = asdict(settings)
    if settings.order == "random":
        del values["order"], values["order_window"]
    del values["recipe"]
    if not settings.label_smoothing:
        del values["label_smoothing"]
    return {**values, **settings.recipe.identity()}
