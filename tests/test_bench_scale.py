"""The scale benchmark's plumbing at a tiny N: the generated folders (flat, and in
ImageNet's layout) are what ImageFolder reads and a rerun writes nothing; every metric is
present and positive. Speeds are measured by running the benchmark, never asserted here."""
import json
import re
from collections import Counter

import numpy as np
import pytest
import simplejpeg

from pipeline.bench import folders
from pipeline.bench import scale as bench_scale
from pipeline.data.imagefolder import ImageFolder
from pipeline.data.readers import carve_validation


def test_generated_folder_is_an_image_folder_and_a_rerun_writes_nothing(tmp_path):
    folder = tmp_path / "images"
    assert folders.generate(folder, 205, 10) == 205
    source = ImageFolder(folder)
    items = source.items()
    assert len(source.classes) == 10 and len(items) == 205
    assert sorted(np.bincount([item.label for item in items])) == [20] * 5 + [21] * 5
    assert {item.split for item in items} == {"train", "test"}
    image = simplejpeg.decode_jpeg((folder / items[0].key).read_bytes())
    assert image.shape == (*folders.SHAPE, 3) and image.std() > 0
    fingerprint = source.fingerprint()
    assert folders.generate(folder, 205, 10) == 0
    assert ImageFolder(folder).fingerprint() == fingerprint


def test_a_killed_class_is_written_again_with_the_same_pixels(tmp_path):
    folder = tmp_path / "images"
    folders.generate(folder, 40, 4)
    before = (folder / "c0002" / "02.jpg").read_bytes()
    (folder / "c0002").rename(folder / ".c0002.partial")  # as a kill mid-class leaves it
    assert folders.generate(folder, 40, 4) == 10
    assert (folder / "c0002" / "02.jpg").read_bytes() == before
    assert not (folder / ".c0002.partial").exists()


def test_imagenet_shape_at_full_size_is_imagenets():
    sizes = folders.imagenet_class_sizes()
    assert len(sizes) == 1000 and sizes.sum() == 1_281_167 and (sizes.min(), sizes.max()) == (732, 1300)
    assert (folders.class_sizes(1_281_167, 1000) == sizes).all() and folders.val_per_class(1_281_167, 1000) == 50


def test_imagenet_layout_is_read_as_train_and_val_with_uneven_classes_told_apart(tmp_path):
    folder = tmp_path / "imagenet"
    assert folders.generate_imagenet(folder, 2000, 20, processes=2) == 2000 + 20 * 4
    source = ImageFolder(folder)
    items = source.items()
    assert len(source.classes) == 20 and all(re.fullmatch(r"n\d{8}", wnid) for wnid in source.classes)
    assert Counter(item.split for item in items) == {"train": 2000, "test": 80}
    for item in items:
        wnid = source.classes[item.label]
        name = rf"{wnid}_\d+" if item.split == "train" else r"ILSVRC2012_val_\d{8}"
        assert re.fullmatch(rf"{'train' if item.split == 'train' else 'val'}/{wnid}/{name}\.JPEG", item.id)
    assert sorted(int(item.id[-13:-5]) for item in items if item.split == "test") == list(range(1, 81))
    sizes = np.bincount([item.label for item in items if item.split == "train"])
    assert 732 / 1300 <= sizes.min() / sizes.max() < 0.9  # uneven, as ImageNet's 732 to 1,300
    carved = Counter(item.split for item in carve_validation(items, 0.1, 0))
    assert carved == {"train": 2000 - sum(round(0.1 * n) for n in sizes), "val": sum(round(0.1 * n) for n in sizes),
                      "test": 80}
    pixels = {split: ([], []) for split in ("train", "test")}  # each split's small images and labels
    for item in items:
        image = simplejpeg.decode_jpeg((folder / item.id).read_bytes())
        pixels[item.split][0].append(image[::4, ::4].ravel() / 255)
        pixels[item.split][1].append(item.label)
    (train, train_labels), (test, test_labels) = (map(np.array, pixels[s]) for s in ("train", "test"))
    means = np.stack([train[train_labels == label].mean(0) for label in range(20)])
    nearest = ((test[:, None] - means) ** 2).sum(-1).argmin(1)
    assert image.shape == (*folders.SHAPE, 3) and (nearest == test_labels).mean() > 0.5  # chance: 0.05
    fingerprint = source.fingerprint()
    assert folders.generate_imagenet(folder, 2000, 20, processes=2) == 0
    assert ImageFolder(folder).fingerprint() == fingerprint


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


@pytest.mark.slow
def test_scale_bench_measures_an_imagenet_layout_folder_where_named(tmp_path):
    folder = tmp_path / "imagenet"
    result = bench_scale.main(["--layout", "imagenet", "--images", "200", "--classes", "10", "--folder", str(folder),
                               "--out", str(tmp_path / "out"), "--parts", "listing", "metadata", "--reps", "1"])
    assert set(result["metrics"]) == {"listing_s", "config_check_s", "fingerprint_s", "metadata_mb",
                                      "metadata_bytes_per_image"}
    assert result["metrics"]["metadata_mb"]["median"] >= 0
    assert result["generated_files"] == 210 and sorted(path.name for path in folder.iterdir()) == ["train", "val"]
