"""The real Stanford 40 Actions copy at ../shared/datasets/stanford40, read the way
PrepareDataset reads it: through open_source, then carve_validation, into an image store."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.imagestore import ImageStore, square, write_image_store
from pipeline.data.readers import carve_validation, open_source
from pipeline.data.source import Items
from pipeline.data.stanford40 import Stanford40

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "stanford40"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"the real Stanford 40 is not at {ROOT}")


@pytest.fixture(scope="module")
def source() -> Stanford40:
    return open_source(f"stanford40:{ROOT}", crop_person=True)


@pytest.fixture(scope="module")
def items(source):
    return source.items()


def test_official_splits_and_classes(source, items):
    assert len(items) == 9532 and len({item.id for item in items}) == 9532
    assert len(source.classes) == 40 and source.classes[0] == "applauding"
    assert Counter(item.split for item in items) == {"train": 4000, "test": 5532}
    assert set(Counter(item.label for item in items if item.split == "train").values()) == {100}


def test_validation_is_carved_from_train_only(items):
    # luigi.cfg's [data] val_fraction = 0.1, seed = 0: 10 of each class's 100 train images.
    carved = carve_validation(items, 0.1, 0)
    assert Counter(item.split for item in carved) == {"train": 3600, "val": 400, "test": 5532}
    assert set(Counter(item.label for item in carved if item.split == "val").values()) == {10}
    assert [item.id for item in carved] == [item.id for item in items]


@pytest.mark.slow
def test_every_person_box_lies_inside_its_image(source, items):
    for item in items:
        with Image.open(ROOT / "JPEGImages" / item.key) as image:  # reads the header only
            width, height = image.size
        x0, y0, x1, y1 = source.person_box(item, (width, height))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, item.id


def test_store_of_real_images_holds_their_person_crops(source, items, tmp_path):
    sample = Items.of(next(i for i in items if i.label == label and i.split == split)
                      for label in range(40) for split in ("train", "test"))
    write_image_store(source, sample, tmp_path / "store.zarr", 32, {}, workers=2, shard_rows=16)
    store = ImageStore(tmp_path / "store.zarr")
    expected = np.stack([square(source.load(item), 32) for item in sample])
    np.testing.assert_array_equal(store.images[np.arange(len(sample))], expected)
    assert store.ids.tolist() == [item.id for item in sample] and store.classes == source.classes
