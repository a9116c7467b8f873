"""PrepareDataset: a data set from luigi.cfg's [datasets] section, as an image store."""
from __future__ import annotations

from functools import cached_property

import luigi

from pipeline.data.imagestore import STORE_VERSION, write_image_store
from pipeline.data.readers import carve_validation, open_source, shuffle_items
from pipeline.spec import parse_spec
from tasks.base import Step
from tasks.config import compute, dask_scheduler, data, datasets


def jpeg_quality() -> int | None:
    """[data] jpeg_quality for a jpeg store; None for a raw one, which it does not change."""
    return data().jpeg_quality if data().image_format == "jpeg" else None


class PrepareDataset(Step):
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
        d = data()
        # A raw store's settings are those from before jpeg stores: its arrays are unchanged, so
        # its fingerprint, and the teacher trained on it, stay valid.
        encoding = {"image_format": "jpeg", "jpeg_quality": jpeg_quality()} if d.image_format == "jpeg" else {}
        shuffled = {"shuffle_rows": True} if d.shuffle_rows else {}  # likewise for stores in the source's order
        return {"source": datasets().get(self.dataset), "content": self.source.fingerprint(),
                "size": d.store_size, "val_fraction": d.val_fraction, "seed": d.seed,
                "on_bad_image": d.on_bad_image, **encoding, **shuffled, "version": STORE_VERSION}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.folder() / "store.zarr" / "manifest.json")

    def work(self) -> None:
        d, c = data(), compute()
        items = carve_validation(self.source.items(), d.val_fraction, d.seed)
        if d.shuffle_rows:
            items = shuffle_items(items, d.seed)
        progress = self.progress(-(-len(items) // c.shard_rows), "image store, shards")
        self.write_settings()
        with dask_scheduler() as scheduler:
            write_image_store(self.source, items, self.folder() / "store.zarr", d.store_size,
                              {"dataset": self.dataset, "fingerprint": self.fingerprint(), **self.settings()},
                              d.on_bad_image, scheduler, c.workers, c.shard_rows, progress, jpeg_quality(),
                              d.chunk_rows)
        progress.close()

    def store_path(self):
        return self.folder() / "store.zarr"
