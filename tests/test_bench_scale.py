"""The scale benchmark's plumbing at a tiny N: the generated folder is what ImageFolder
reads and a rerun writes nothing; every metric is present and positive. Speeds are
measured by running the benchmark, never asserted here."""
import json

import numpy as np
import pytest
import simplejpeg

from pipeline.bench import scale as bench_scale
from pipeline.data.imagefolder import ImageFolder


def test_generated_folder_is_an_image_folder_and_a_rerun_writes_nothing(tmp_path):
    folder = tmp_path / "images"
    assert bench_scale.generate(folder, 205, 10) == 205
    source = ImageFolder(folder)
    items = source.items()
    assert len(source.classes) == 10 and len(items) == 205
    assert sorted(np.bincount([item.label for item in items])) == [20] * 5 + [21] * 5
    assert {item.split for item in items} == {"train", "test"}
    image = simplejpeg.decode_jpeg((folder / items[0].key).read_bytes())
    assert image.shape == (*bench_scale.SHAPE, 3) and image.std() > 0
    fingerprint = source.fingerprint()
    assert bench_scale.generate(folder, 205, 10) == 0
    assert ImageFolder(folder).fingerprint() == fingerprint


def test_a_killed_class_is_written_again_with_the_same_pixels(tmp_path):
    folder = tmp_path / "images"
    bench_scale.generate(folder, 40, 4)
    before = (folder / "c0002" / "02.jpg").read_bytes()
    (folder / "c0002").rename(folder / ".c0002.partial")  # as a kill mid-class leaves it
    assert bench_scale.generate(folder, 40, 4) == 10
    assert (folder / "c0002" / "02.jpg").read_bytes() == before
    assert not (folder / ".c0002.partial").exists()


@pytest.mark.slow
def test_scale_bench_reports_every_metric(tmp_path):
    out = tmp_path / "scale"
    result = bench_scale.main(["--images", "200", "--classes", "10", "--out", str(out), "--sizes", "32",
                               "--reps", "1", "--holdout", "0.1"])
    stages = ("store_raw32", "store_jpeg32", "teacher_pass")
    expected = {"listing_s", "config_check_s", "fingerprint_s", "noop_runall_s", "noop_imports_s", "noop_rest_s",
                *(f"{stage}_{key}" for stage in stages for key in ("img_per_s", "peak_mb", "work_mb")),
                "store_raw32_bytes_per_image", "store_jpeg32_bytes_per_image", "teacher_pass_forwards_per_s"}
    assert set(result["metrics"]) == expected
    assert all(m["median"] > 0 for m in result["metrics"].values())
    assert result["first_runall_did_work"] and result["generated_files"] == 200
    assert "images-200-10 holdout=0.1\n" in (out / "experiment.cfg").read_text()
    bytes_per_image = {f: result["metrics"][f"store_{f}32_bytes_per_image"]["median"] for f in ("raw", "jpeg")}
    assert bytes_per_image["raw"] > bytes_per_image["jpeg"]
    assert json.loads((out / "scale.json").read_text())["metrics"].keys() == expected
    assert not (out / "cache.zarr").exists() and not (out / "store_raw32.zarr").exists()
