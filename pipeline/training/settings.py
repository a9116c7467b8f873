"""A training run's schedule, and the part of it a run's fingerprint holds."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from cache.storage.fingerprint import changed_settings
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
    order: str          # TrainLoader's: auto, random or shards (the tasks give it resolved)
    order_window: int   # shards read at a time in shards order
    recipe: Recipe      # how random views are drawn: RandAugment, mixup, cutmix
    label_smoothing: float  # of the label term

    def __post_init__(self) -> None:
        if isinstance(self.recipe, dict):  # read back from a job's JSON
            object.__setattr__(self, "recipe", Recipe(**self.recipe))


# The settings that could not be chosen at first, as runs had them then.
BEFORE_ADDED = {"order": "random", "label_smoothing": 0.0}


def fingerprint_fields(settings: TrainSettings) -> dict:
    """The settings as a run's fingerprint holds them: those added later only once changed
    (the recipe too), so that runs made before them keep their fingerprints; the window only
    in shards order, the one that reads it. The order as resolved (tasks/data.py train_order):
    a run whose auto is random is a random-order run."""
    values = asdict(settings)
    del values["recipe"]
    if settings.order == "random":
        del values["order_window"]
    return {**changed_settings(values, BEFORE_ADDED), **settings.recipe.fingerprint_fields()}
