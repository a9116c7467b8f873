"""The teacher pass: run the teacher once over every stored image and write its logits
and pooled features, for the eval view of every split and for V recorded random views
of every training image, into the Zarr cache (cache/schema.py)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
import zarr

import models
from cache.compact import tail_uniforms
from cache.schema import LogitCoding, create_cache, encode_outputs
from cache.storage import blocks
from cache.storage.integrity import checked, read_all
from pipeline.data.imagestore import store_images
from pipeline.inference import predict
from pipeline.runtime import gpus
from pipeline.runtime.device import Precision, resolve_device
from pipeline.views.records import CROP_AND_FLIP, Partners, Recipe, random_views, whole_views


@lru_cache(maxsize=2)
def _teacher(model: str, kwargs_json: str, classes: int, weights: str, device: torch.device,
             compile: bool) -> torch.nn.Module:
    # Once per process: dask's process and cluster workers each build their own.
    net = models.create(model, classes, **json.loads(kwargs_json))
    net = models.load_weights(net, weights).eval().to(device)
    return torch.compile(net) if compile else net


@dataclass(frozen=True)
class TeacherJob:
    """Everything a worker needs to fill one shard of the cache; picklable."""
    store: str
    out: str
    model: str
    kwargs_json: str
    weights: str
    classes: int
    image_size: int
    views: int
    seed: int
    batch_size: int = 256
    threads: int = 0  # torch threads per worker; 0 keeps torch's default
    stages: tuple[int, ...] = ()  # feature maps of these stages, eval view only
    device: str = "cpu"  # a [compute] device setting, resolved in the worker
    precision: str = "fp32"  # fp32, bf16 or fp16 (resolved); outputs are stored as float16 regardless
    compile: bool = False  # torch.compile the teacher
    coding: LogitCoding = LogitCoding()  # how the logits are stored (cache/schema.py)
    feature_dtype: str = "float16"  # or int8, int4, one float16 scale per vector; none (cache/compact.py)
    recipe: Recipe = CROP_AND_FLIP  # how the random views are drawn: the students' [train] recipe

    def __call__(self, block: tuple) -> None:
        tag, start, stop = block
        if self.threads:
            torch.set_num_threads(self.threads)
        group = zarr.open_group(self.out, mode="r+")
        # From disk, a batch at a time, decoded as the student loader decodes them (one reader).
        images = store_images(zarr.open_array(f"{self.store}/images", mode="r"), budget=0)
        size = images.shape[1]
        recipe = CROP_AND_FLIP if tag == "eval" else self.recipe
        if tag == "eval":
            rows = np.arange(start, stop)
            params = whole_views(len(rows), size)[:, None]
        else:
            # This block's rows, not all of them, and for partners those of their store shards, which lie
            # within a shard's rows on either side.
            reach = images.shard_rows if recipe.mixes else 0
            lo, hi = max(0, start - reach), stop + reach
            with checked(group["aug/rows"], slice(lo, hi)):
                near = group["aug/rows"][lo:hi]
            rows = near[start - lo:stop - lo]
            partners = Partners(near, images.shard_rows) if recipe.mixes else None
            params = random_views(self.seed, rows, self.views, size, recipe, partners)
        v = params.shape[1]
        net = _teacher(self.model, self.kwargs_json, self.classes, self.weights,
                       resolve_device(gpus.held() or self.device), self.compile)
        stages = self.stages if tag == "eval" else ()
        logits, features, *maps = predict(net, images, rows, params, self.image_size,
                                          self.batch_size, stages, Precision(self.precision), recipe)
        if tag == "aug":
            group["aug/params"][start:stop] = params
            logits, features = logits.reshape(len(rows), v, -1), features.reshape(len(rows), v, -1)
        uniforms = tail_uniforms(self.seed, tag, rows, (v,) if tag == "aug" else ()) if self.coding.sampled else None
        projection = read_all(group["head/projection"]) if self.coding.projected else None
        arrays = encode_outputs(logits, features, dict(zip(stages, maps)), self.coding, self.feature_dtype, uniforms,
                                projection)
        for name, array in arrays.items():
            group[f"{tag}/{name}"][start:stop] = array
        blocks.mark_done(self.out, block)


def _head(job: TeacherJob) -> tuple[np.ndarray, np.ndarray] | None:
    """The teacher's classifier, where the cache rebuilds the logits through it."""
    if not job.coding.through_head:
        return None
    net = models.load_weights(models.create(job.model, job.classes, **json.loads(job.kwargs_json)), job.weights)
    return tuple(t.numpy() for t in net.classifier())


def cache_teacher(job: TeacherJob, train_rows: np.ndarray, count: int, feature_dim: int,
                  attrs: dict, scheduler: str = "threads", workers: int = 1,
                  shard_rows: int = 512, progress=None, stage_shapes: dict | None = None,
                  stopwatch: blocks.Stopwatch | None = None) -> dict:
    """Write (or resume) the cache at job.out and return its manifest. `count` is the
    number of store rows, `train_rows` the rows that get random views, `stage_shapes`
    the (C, H, W) of each of job.stages; `stopwatch` (made on job.out) times the pass over
    all its runs. A cache resumed keeps the shards it was started with."""
    # The recipe its views were drawn by, which a loader replaying them checks.
    attrs = {**attrs, "recipe": asdict(job.recipe)}
    shard_rows = blocks.resumed_shard_rows(job.out, shard_rows)
    create_cache(job.out, count, train_rows, job.views, job.classes, feature_dim, shard_rows, attrs,
                 stage_shapes, job.coding, job.feature_dtype, job.recipe.width, _head(job))
    work = blocks.shard_blocks(count, shard_rows, "eval")
    if job.views:
        work += blocks.shard_blocks(len(train_rows), shard_rows, "aug")
    blocks.run_blocks(job, blocks.pending(job.out, work), scheduler, workers, progress, stopwatch)
    manifest = {**attrs, "shards": len(work)}
    blocks.finish(job.out, manifest, work)
    return manifest
