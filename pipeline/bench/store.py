"""The image store's formats: bytes per image on disk and read (decode) images/s of raw and
jpeg stores of one data set at several store sizes, random rows a batch at a time, from
disk (budget 0) and from memory; with --device cuda also from memory onto the GPU, where
jpeg rows are decoded by nvJPEG (imagestore.pixels).

    python -m pipeline.bench.store --source stanford40:../shared/datasets/stanford40 \\
        --options crop_person=true context=0.2 --sizes 64 128 256 --json store-bench.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cache.storage.files import atomic_write_json
from pipeline.bench.harness import bytes_on_disk, calibration, log_step
from pipeline.data.imagestore import Images, ImageStore, pixels, write_image_store
from pipeline.data.readers import open_source
from pipeline.spec import parse_spec


def read_speed(images, batch: int, seconds: float, seed: int = 1) -> float:
    """Median images/s of reading `batch` random rows, over about `seconds` of reads."""
    rng, spent, rates = np.random.default_rng(seed), 0.0, []
    images.take(rng.integers(len(images), size=batch))  # warm
    while spent < seconds:
        rows = rng.integers(len(images), size=batch)
        tic = time.perf_counter()
        images.take(rows)
        spent += time.perf_counter() - tic
        rates.append(batch / (time.perf_counter() - tic))
    return float(np.median(rates))


class OnDevice:
    """A store's images read as the loader puts them on `device` (decoded there if jpeg),
    each read waited for; read like Rows for read_speed."""

    def __init__(self, images: Images, device: torch.device):
        self.images, self.device = images, device

    def __len__(self) -> int:
        return len(self.images)

    def take(self, rows: np.ndarray) -> torch.Tensor:
        out = pixels(self.images, rows, self.device)
        torch.cuda.synchronize(self.device)
        return out


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print its table, optionally write JSON; returns a result per store."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="a [datasets] source, e.g. stanford40:PATH")
    parser.add_argument("--options", nargs="*", default=[], help="its key=value options")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="of reads per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cuda or cuda:N adds reads onto that GPU")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, options = parse_spec(" ".join([args.source, *args.options]))
    source = open_source(name, **options)
    items, figure = source.items(), calibration()
    workdir, results = Path(tempfile.mkdtemp(prefix="kd-store-bench-")), []
    try:
        for size in args.sizes:
            for quality in (None, args.quality):
                path = workdir / f"{size}-{quality or 'raw'}.zarr"
                tic = time.perf_counter()
                write_image_store(source, items, path, size, {}, workers=args.threads, jpeg_quality=quality)
                build = time.perf_counter() - tic
                stored = bytes_on_disk(path / "images")
                results.append({"size": size, "format": f"jpeg q{quality}" if quality else "raw",
                                "images": len(items), "bytes_per_image": stored / len(items), "build_s": build,
                                "img_per_s_disk": read_speed(ImageStore(path, budget=0).images, args.batch,
                                                             args.seconds),
                                "img_per_s_memory": read_speed(ImageStore(path, budget=1 << 40).images, args.batch,
                                                               args.seconds)})
                if args.device != "cpu":
                    on_device = OnDevice(ImageStore(path, budget=1 << 40).images, torch.device(args.device))
                    results[-1]["img_per_s_device"] = read_speed(on_device, args.batch, args.seconds)
                log_step(json.dumps(results[-1]))
                shutil.rmtree(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("size  format    bytes/image  jpeg/raw  img/s disk  img/s memory  build s  img/s device")
    for r in results:
        raw = next(x for x in results if x["size"] == r["size"] and x["format"] == "raw")
        print(f"{r['size']:>4}  {r['format']:<8}  {r['bytes_per_image']:>11,.0f}  "
              f"{r['bytes_per_image'] / raw['bytes_per_image']:>8.3f}  {r['img_per_s_disk']:>10,.0f}  "
              f"{r['img_per_s_memory']:>12,.0f}  {r['build_s']:>7.1f}  {r.get('img_per_s_device', np.nan):>12,.0f}")
    print(f"calibration {figure:.0f} img/s before, {calibration():.0f} after")
    if args.json:
        atomic_write_json(args.json, {"calibration_img_per_s": figure, "results": results}, indent=1)
    return results


if __name__ == "__main__":
    main()
