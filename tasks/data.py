"""PrepareDataset: a data set from luigi.cfg's [datasets] section, as an image store."""
from __future__ import annotations

from functools import cached_property

import luigi

from cache.storage.fingerprint import changed_settings
from pipeline.data.imagestore import STORE_VERSION, write_image_store
from pipeline.data.readers import carve_validation, open_source, shuffled_order, split_counts
from pipeline.spec import parse_spec
from pipeline.training.orders import resolved_order
from tasks.base import FingerprintedTask, memory_budget
from tasks.config import compute, dask_scheduler, data, datasets, recipe, teacher, train

# A store's settings as they were before they could be chosen: a raw store in the source's
# order. Its arrays are unchanged, so its fingerprint, and the teacher trained on it, stay valid.
BEFORE_ADDED = {"image_format": "raw", "jpeg_quality": None, "shuffle_rows": False}


def shuffled_store(dataset: str) -> bool:
    """Whether the store's rows are written in a seeded random order: when [data] shuffle_rows
    asks, and whenever the order of the rows matters, each image then drawing on its
    neighbours, which in the source's order (an image folder's is class by class) are of few
    classes: a recipe that mixes ([train]'s or [teacher]'s; a partner is of the image's store
    shard) and the shards order, auto's included (a batch is a few shards' images)."""
    return (data().shuffle_rows or train_order(dataset) == "shards"
            or any(recipe(section).mixes for section in (train(), teacher())))


def train_order(dataset: str) -> str:
    """[train] order as the runs on `dataset` serve it: auto resolved (orders.resolved_order)
    by the store's decoded bytes, its images x store_size^2 x 3, known before it is written,
    against [compute] memory_budget_gb. The fingerprints hold the resolved order, so a run
    whose auto is random keeps the random order's fingerprint."""
    order = train().order
    if order != "auto":  # without counting the data set's images
        return order
    pixels = PrepareDataset(dataset).image_count * data().store_size ** 2 * 3
    return resolved_order(order, pixels, memory_budget())


def jpeg_quality() -> int | None:
    """[data] jpeg_quality for a jpeg store; None for a raw one, which it does not change."""
    return data().jpeg_quality if data().image_format == "jpeg" else None


class PrepareDataset(FingerprintedTask):
    """Decode, convert and resize every image of the data set once, in parallel."""

    kind = "store"

    @cached_property
    def source(self):
        specs = datasets()
        if self.dataset not in specs:
            raise ValueError(f"data set {self.dataset!r} is not in luigi.cfg's [datasets] "
                             f"section (it has: {', '.join(specs) or 'nothing'})")
        spec, options = parse_spec(specs[self.dataset])
        return open_source(spec, **options)

    def settings(self) -> dict:
        data_cfg = data()
        added = {"image_format": data_cfg.image_format, "jpeg_quality": jpeg_quality(),
                 "shuffle_rows": shuffled_store(self.dataset)}
        return {"source": datasets().get(self.dataset), "content": self.source.fingerprint(),
                "size": data_cfg.store_size, "val_fraction": data_cfg.val_fraction, "seed": data_cfg.seed,
                "on_bad_image": data_cfg.on_bad_image, **changed_settings(added, BEFORE_ADDED),
                "version": STORE_VERSION}

    @cached_property
    def image_count(self) -> int:
        """The data set's images, every split: its store's rows (counted, not listed as items:
        a million items cost seconds at every command)."""
        return sum(split_counts(self.source).values())

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "store.zarr" / "manifest.json")

    def work(self) -> None:
        data_cfg, compute_cfg = data(), compute()
        items = carve_validation(self.source.items(), data_cfg.val_fraction, data_cfg.seed)
        order = shuffled_order(len(items), data_cfg.seed) if shuffled_store(self.dataset) else None
        progress = self.progress(-(-len(items) // compute_cfg.shard_rows), "image store, shards")
        self.write_settings()
        with dask_scheduler() as scheduler:
            write_image_store(self.source, items, self.folder() / "store.zarr", data_cfg.store_size,
                              {"dataset": self.dataset, "fingerprint": self.fingerprint(), **self.settings()},
                              data_cfg.on_bad_image, scheduler, compute_cfg.workers, compute_cfg.shard_rows,
                              progress, jpeg_quality(), data_cfg.chunk_rows, order)
        progress.close()

    def store_path(self):
        return self.folder() / "store.zarr"
