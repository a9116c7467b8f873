"""The teacher cache at many classes: bytes per image and loader samples/s of each encoding
(a cache's [teacher] keys: every logit as float16, int8 or int4, or the top-k with a flat,
tempered or sampled tail; float16, int8, int4 or no features) at several view counts, on a
data set of C classes generated on the spot (noise images) with a random-init teacher.
Accuracy is not the point here, sizes and speeds are; what an encoding costs in accuracy
is measured by the cache study (configs/stanford40-cache.cfg).

    python -m pipeline.bench.encodings --classes 1000 --views 8 32 --json cache-bench.json
    python -m pipeline.bench.encodings --gap work/stanford40/cache-*/cache.zarr \
        --caches "topk=10" "topk=10 tail=tempered" "topk=10 tail=sampled samples=32"

Every ratio compares two measurements of this one run: each encoding against today's
format (every logit, float16 features) at the same views; loader epochs interleaved.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import deque
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cache.compact import classifier_basis, dequantize, dequantize_logits, tail_uniforms, topk_decode
from cache.reader import HeadLogits, TeacherCache
from cache.schema import LogitCoding, encode_outputs
from cache.storage.files import atomic_write_json
from pipeline.bench.fixtures import noise_store, random_teacher
from pipeline.bench.harness import bytes_on_disk, calibration, interleave, log_step, metric, seconds, table
from pipeline.data.imagestore import ImageStore
from pipeline.spec import parse_cache
from pipeline.teacher.teacher_pass import TeacherJob, cache_teacher
from pipeline.training.loader import TrainLoader

FULL = "feature_dtype=float16 topk=0"  # today's format: every logit, float16 features
GOALS = {"bytes_over_full": ("<=", 0.10), "loader_over_full": (">=", 1.0)}
DEFAULT_CACHES = (FULL, "feature_dtype=none topk=10", "feature_dtype=none logit_dtype=int8",
                  "feature_dtype=none samples=32 tail=sampled topk=10", "feature_dtype=int4 logit_dtype=head")


def coding_gap(cache: TeacherCache, specs: list[str], temperature: float, seed: int = 0) -> dict:
    """How far the distribution each coding rebuilds is from the teacher's own at
    `temperature`, over the cached training views of a full cache: median and 95th
    percentile of their total variation and of KL(full || rebuilt), and the mean squared
    error of the log-probabilities at `temperature`, all of it and its part in the PRINCIPAL
    directions of the teacher's (those of most variance over the views, where its signal
    lies: an error there moves a student more than one spread over every class). A sampled tail is drawn
    once (its distribution is the teacher's only in expectation over draws; its KL is
    unbounded, the undrawn classes at the floor). Logits from the features, or in rank m,
    are measured where the cache is one of logits from float16 features itself (its features
    and head are the reference then), else left out: logits alone cannot rebuild them."""
    every = np.arange(len(cache.aug_rows))
    logits = cache.aug_logits.take(every).astype(np.float32)
    logits = logits.reshape(-1, logits.shape[-1])
    head = cache.aug_logits if isinstance(cache.aug_logits, HeadLogits) else None
    features = None if head is None else head.features.take(every).astype(np.float32).reshape(len(logits), -1)
    full = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, -1)
    directions = _principal(full, PRINCIPAL)
    out = {}
    for text in specs:
        spec = parse_cache(text)
        c = LogitCoding.of(spec, temperature)
        if c.through_head and head is None:
            continue
        uniforms = tail_uniforms(seed, "aug", np.arange(len(logits)), ()) if c.sampled else None
        projection = classifier_basis(head.weight, c.rank) if c.projected else None
        feature_dtype = spec.get("feature_dtype", "float16") if c.from_features else "none"
        arrays = encode_outputs(logits, logits[:, :0] if features is None else features, {}, c,
                                feature_dtype, uniforms, projection)
        width = None if projection is None else projection.shape[1] - c.lead
        packed = (width or features.shape[-1]) if (c.dtype if c.projected else feature_dtype) == "int4" else None
        rebuilt = torch.as_tensor(_rebuilt(arrays, c, logits.shape[-1], head, projection, packed))
        approx = torch.log_softmax(rebuilt.double() / temperature, -1)
        tv = 0.5 * (full.exp() - approx.exp()).abs().sum(-1)
        kl = (full.exp() * (full - approx)).sum(-1)
        error = approx - full
        out[f"{c.describe(spec.get('feature_dtype', 'float16'))} T{temperature:g}"] = {
            **{f"{name} {q}": float(np.percentile(v.numpy(), p))
               for name, v in (("tv", tv), ("kl", kl)) for q, p in (("median", 50), ("p95", 95))},
            "error": float(error.square().sum(-1).mean()),
            f"error top{PRINCIPAL}": float((error @ directions).square().sum(-1).mean())}
    return out


PRINCIPAL = 10  # the teacher's principal directions the coding gap weighs an error in


def _principal(x: torch.Tensor, count: int) -> torch.Tensor:
    """(C, count) orthonormal: the directions of most variance of the rows of x."""
    centred = x - x.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
    return vectors[:, -count:]


def _rebuilt(arrays: dict[str, np.ndarray], c: LogitCoding, classes: int, head: HeadLogits | None = None,
             projection: np.ndarray | None = None, packed: int | None = None) -> np.ndarray:
    """Full logits from one split's encoded arrays, as the reader rebuilds them (`head`: the
    classifier of logits from the features; `projection`: a rank's directions; `packed`:
    the inputs' length, for int4 codes)."""
    if c.through_head:
        parts = []
        for name in ("logit_lead", "logit_coords") if c.projected else ("features",):
            if name in arrays:
                scales = arrays.get(f"{name}_scales")
                parts.append(arrays[name] if scales is None else dequantize(arrays[name], scales, packed))
        inputs = np.concatenate([part.astype(np.float32) for part in parts], axis=-1)
        weight = head.weight if projection is None else head.weight @ projection
        return inputs.astype(np.float32) @ weight.T + head.bias
    if c.dense:
        return arrays["logits"].astype(np.float32) if c.dtype == "float16" else dequantize_logits(
            arrays["logits"], arrays["logits_scales"], arrays["logits_offsets"], classes if c.dtype == "int4" else None)
    none = np.zeros((*arrays["tail_logsumexp"].shape, 0), np.float32)
    return topk_decode(arrays.get("topk_values", none), arrays.get("topk_indices", none), arrays["tail_logsumexp"],
                       classes, c.temperature, arrays.get("sample_indices"))


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Every encoding's cache of a data set made in `workdir`, at each view count: its bytes
    per image and teacher pass, its loader's epochs interleaved, and the metrics against today's."""
    torch.set_num_threads(args.threads)
    store_path = noise_store(workdir, args.classes, args.per_class, args.image_size, args.seed)
    store = ImageStore(store_path)
    teacher = random_teacher(args.teacher, args.classes, args.seed, workdir / "teacher.safetensors")
    specs = list(dict.fromkeys([FULL, *args.caches]))
    caches, result = {}, {"caches": {}, "metrics": {}}
    for views in args.views:
        for text in specs:
            spec = parse_cache(text)
            name = f"V{views} {text}"
            job = TeacherJob(store=str(store_path), out=str(workdir / f"{len(caches)}.zarr"), model=args.teacher,
                             kwargs_json="{}", weights=str(workdir / "teacher.safetensors"), classes=args.classes,
                             image_size=args.image_size, views=views, seed=args.seed, batch_size=256,
                             threads=args.threads, coding=LogitCoding.of(spec, args.temperature),
                             feature_dtype=spec.get("feature_dtype", "float16"))
            tic = time.perf_counter()
            cache_teacher(job, store.rows("train"), len(store.labels), teacher.num_features,
                          {"identity": {"views": views, **spec}})
            caches[name] = TeacherCache(job.out)
            pass_seconds = time.perf_counter() - tic
            result["caches"][name] = {"views": views, "cache": text, "pass_seconds": pass_seconds,
                                      "pass_forwards_per_s": (len(store.labels) + views * len(store.rows("train")))
                                      / pass_seconds,
                                      "bytes_per_image": bytes_on_disk(Path(job.out)) / len(store.labels)}
            log_step(f"{name}: {result['caches'][name]['bytes_per_image']:.0f} bytes per image")
    loaders = {name: TrainLoader(store, args.image_size, args.batch_size, args.seed, cache=cache)
               for name, cache in caches.items()}
    def epochs(loader: TrainLoader) -> float:
        return seconds(lambda: [deque(loader.epoch(e), maxlen=0) for e in range(args.loader_epochs)])

    timings = interleave(args.reps, **{name: partial(epochs, loader) for name, loader in loaders.items()})
    samples = len(store.rows("train")) * args.loader_epochs
    for name, info in result["caches"].items():
        full = f"V{info['views']} {FULL}"
        info["loader_samples_per_s"] = float(np.median(samples / timings[name]))
        if name != full:
            result["metrics"][f"{name} bytes_over_full"] = metric(
                "bytes_over_full", info["bytes_per_image"] / result["caches"][full]["bytes_per_image"], GOALS)
            result["metrics"][f"{name} loader_over_full"] = metric(
                "loader_over_full", timings[full] / timings[name], GOALS)
    result["timings"] = {name: t.tolist() for name, t in timings.items()}
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or only --gap), print its results, optionally write JSON; returns the results."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.encodings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=2, help="training images per class (plus one test image)")
    parser.add_argument("--views", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--caches", nargs="+", default=list(DEFAULT_CACHES),
                        help="each a cache's [teacher] keys as [cache_study] gives them, e.g. 'topk=10 tail=sampled "
                             "samples=32 feature_dtype=none'; every logit with float16 features is always measured")
    parser.add_argument("--temperature", type=float, default=4.0, help="of a tempered or sampled tail ([kd]'s)")
    parser.add_argument("--teacher", default="convnext_atto", help="timm name, random init")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--loader-epochs", type=int, default=5, help="loader epochs per timed repetition")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gap", type=Path, help="only measure how far each of --caches' targets is from the full "
                                                 "logits of this finished full cache, at --temperature")
    parser.add_argument("--json", type=Path, help="write every result and timing here")
    args = parser.parse_args(argv)
    if args.gap:
        gaps = coding_gap(TeacherCache(args.gap), [c for c in args.caches if c != FULL], args.temperature, args.seed)
        print("\n".join(f"{name}: " + ", ".join(f"{q} {v:.3g}" for q, v in g.items()) for name, g in gaps.items()))
        return gaps
    workdir = Path(tempfile.mkdtemp(prefix="kd-cache-bench-"))
    try:
        tic, figure = time.perf_counter(), calibration()
        result = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result |= {"settings": vars(args) | {"json": str(args.json)}, "calibration_img_per_s": figure,
               "wall_seconds": time.perf_counter() - tic}
    print("\n".join(f"{name}: {c['bytes_per_image']:.0f} bytes/image, loader {c['loader_samples_per_s']:.0f} "
                    f"samples/s, pass {c['pass_seconds']:.1f} s ({c['pass_forwards_per_s']:.0f} forwards/s)"
                    for name, c in result["caches"].items()))
    print(table(result["metrics"]))
    print(f"wall time {result['wall_seconds']:.0f} s, calibration {figure:.0f} img/s")
    if args.json:
        atomic_write_json(args.json, json.loads(json.dumps(result, default=str)), indent=1)
    return result


if __name__ == "__main__":
    main()
