"""Data set readers: generated miniature layouts in tmp_path, plus the real Stanford 40 when present."""
from __future__ import annotations

import logging
import os
import pickle
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from support.hdf5 import write_h5

from pipeline.checks import check_dataset
from pipeline.data.files import read_image, source_fingerprint, tree_stats
from pipeline.data.hdf5 import HDF5Source
from pipeline.data.imagefolder import ImageFolder
from pipeline.data.readers import carve_validation, open_source, split_counts
from pipeline.data.source import BadImage, BadSource, Item, Items
from pipeline.data.stanford40 import Stanford40

ROOT = Path(__file__).resolve().parents[1]
REAL_STANFORD = ROOT.parent / "shared" / "datasets" / "stanford40"


def save(path: Path, image: Image.Image, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8))


# --- Stanford 40 --------------------------------------------------------------------------

ACTIONS = ["riding_a_horse", "applauding", "phoning"]  # deliberately not sorted
# Every XML says the original was 80x60 with box x 11..50, y 21..40 (1-based, inclusive);
# the stored images are 40x30, so the box is (5, 10, 25, 20) in stored pixels.
XML = """<annotation>
  <filename>{name}.jpg</filename>
  <object>
    <name>person</name>
    <action>{action}</action>
    <bndbox><ymax>40</ymax><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax></bndbox>
  </object>
  <size><height>60</height><depth>3</depth><width>80</width></size>
</annotation>
"""


@pytest.fixture
def stanford(tmp_path: Path) -> Path:
    root = tmp_path / "stanford40"
    splits = {"train": [], "test": []}
    for label, action in enumerate(ACTIONS):
        for n in range(1, 5):
            name = f"{action}_{n:03d}"
            save(root / "JPEGImages" / f"{name}.jpg", noise((40, 30), label * 10 + n))
            (root / "XMLAnnotations").mkdir(exist_ok=True)
            (root / "XMLAnnotations" / f"{name}.xml").write_text(XML.format(name=name, action=action))
            splits["train" if n <= 2 else "test"].append(f"{name}.jpg")
    (root / "ImageSplits").mkdir()
    (root / "ImageSplits" / "actions.txt").write_text(
        "action_name\t\t\tnumber_of_images\n"
        "riding_a_horse\t\t\t4\n"
        "applauding\t\t\t\t4\n"
        "phoning\t4\t\n")  # stray trailing tab, as in the real file
    for split, names in splits.items():
        (root / "ImageSplits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_stanford_items_follow_the_split_files_and_actions_order(stanford: Path) -> None:
    source = Stanford40(stanford)
    items = source.items()
    assert source.classes == ACTIONS
    assert len(items) == 12 and len({item.id for item in items}) == 12
    assert [item.split for item in items] == ["train"] * 6 + ["test"] * 6
    assert all(item.id.startswith(ACTIONS[item.label] + "_") for item in items)
    assert items[0] == Item("riding_a_horse_001", 0, "train", "riding_a_horse_001.jpg")


def test_stanford_box_is_scaled_from_the_original_size(stanford: Path) -> None:
    source = Stanford40(stanford)
    item = source.items()[0]
    assert source.person_box(item, (40, 30)) == pytest.approx((5, 10, 25, 20))
    assert source.load(item).size == (40, 30)


@pytest.mark.parametrize("context, size", [(0.0, (20, 10)), (0.2, (28, 14)), (1.0, (40, 30))])
def test_stanford_person_crop_widens_and_clips(stanford: Path, context: float, size: tuple) -> None:
    source = Stanford40(stanford, crop_person=True, context=context)
    image = source.load(source.items()[0])
    assert image.mode == "RGB" and image.size == size


def test_stanford_unknown_action_in_split_file(stanford: Path) -> None:
    split_file = stanford / "ImageSplits" / "train.txt"
    split_file.write_text(split_file.read_text() + "dancing_001.jpg\n")
    with pytest.raises(BadSource, match=r"train\.txt.*dancing_001\.jpg"):
        Stanford40(stanford).items()


def test_stanford_split_file_naming_a_missing_image(stanford: Path) -> None:
    (stanford / "JPEGImages" / "phoning_004.jpg").unlink()
    with pytest.raises(BadSource, match=r"test\.txt.*phoning_004\.jpg"):
        Stanford40(stanford).items()


def test_stanford_person_crop_needs_every_annotation(stanford: Path) -> None:
    (stanford / "XMLAnnotations" / "applauding_001.xml").unlink()
    assert len(Stanford40(stanford).items()) == 12
    with pytest.raises(BadSource, match=r"train\.txt.*applauding_001\.xml"):
        Stanford40(stanford, crop_person=True).items()


def test_stanford_fingerprint_tracks_files_and_options(stanford: Path) -> None:
    before = Stanford40(stanford).fingerprint()
    assert Stanford40(stanford).fingerprint() == before
    assert Stanford40(stanford, crop_person=True).fingerprint() != before
    image = stanford / "JPEGImages" / "applauding_002.jpg"
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 1))
    assert Stanford40(stanford).fingerprint() != before


# --- image folders ------------------------------------------------------------------------

CLASSES = ["a.b", "café au lait", "Ärger"]  # sorted order; dots, spaces, non-ASCII


def image_tree(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(CLASSES):
        for n in range(per_class):
            save(root / name / f"img {n}.png", noise((12, 10), c * 100 + n))
    return root


def test_imagefolder_split_layout_ignores_hidden_and_non_images(tmp_path: Path, caplog) -> None:
    for split in ("train", "val", "test"):
        image_tree(tmp_path / split)
    (tmp_path / "train" / "a.b" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train" / "a.b" / "._img 0.png").write_bytes(b"junk")
    (tmp_path / "test" / "Ärger" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".cache").mkdir()
    with caplog.at_level(logging.INFO, logger="pipeline.data.imagefolder"):
        source = open_source(f"imagefolder:{tmp_path}")
        items = source.items()
    assert source.classes == CLASSES
    assert [sum(item.split == s for item in items) for s in ("train", "val", "test")] == [9, 9, 9]
    assert "ignored 3 hidden or non-image files" in caplog.text
    item = next(i for i in items if i.split == "test" and i.label == 1)
    assert item.id == "test/café au lait/img 0.png"
    assert source.load(item).size == (12, 10)


def test_imagefolder_single_tree_holdout_is_stratified_and_seeded(tmp_path: Path) -> None:
    image_tree(tmp_path, per_class=8)
    items = ImageFolder(tmp_path, holdout=0.25, seed=3).items()
    assert all(sum(i.split == "test" and i.label == c for i in items) == 2 for c in range(3))
    assert ImageFolder(tmp_path, holdout=0.25, seed=3).items() == items
    assert ImageFolder(tmp_path, holdout=0.25, seed=4).items() != items
    assert {i.split for i in ImageFolder(tmp_path, holdout=0).items()} == {"train"}


def test_imagefolder_train_and_val_only_scores_val_and_selects_on_a_part_of_train(tmp_path: Path) -> None:
    """ImageNet as laid out: val/ is the test split; [data] val_fraction of train is carved for selection."""
    image_tree(tmp_path / "train", per_class=10)
    image_tree(tmp_path / "val")
    items = open_source(f"imagefolder:{tmp_path}").items()
    assert [(i.split, i.id.split("/")[0]) for i in items] == [("train", "train")] * 30 + [("test", "val")] * 9
    carved = carve_validation(items, 0.2, seed=0)
    assert [sum(i.split == s for i in carved) for s in ("train", "val", "test")] == [24, 6, 9]


@pytest.mark.parametrize("splits", [("train",), ("val", "test"), ("test",)])
def test_imagefolder_split_folders_without_train_or_test_images(tmp_path: Path, splits: tuple) -> None:
    for split in splits:
        image_tree(tmp_path / split)
    with pytest.raises(BadSource, match="needs train/ and test/"):
        ImageFolder(tmp_path)


@pytest.mark.parametrize("splits", [("train", "test"), ("train", "val", "test"), ("train", "val"), ()])
def test_imagefolder_is_checked_by_its_counts_without_making_items(tmp_path: Path, monkeypatch,
                                                                    splits: tuple) -> None:
    """The configuration check of ImageNet's 1.28 M files counts them: a million items cost seconds."""
    for folder in [tmp_path / split for split in splits] or [tmp_path]:
        image_tree(folder, per_class=5)
    save(tmp_path / (splits[0] if splits else "") / "a.b" / "extra.png", noise((4, 4)))
    source = ImageFolder(tmp_path, holdout=0.3)
    counts = Counter((item.split, item.label) for item in source.items())
    monkeypatch.setattr(ImageFolder, "items", lambda self: pytest.fail("the check made the items"))
    assert split_counts(source) == counts
    assert check_dataset("mine", f"imagefolder:{tmp_path} holdout=0.3") == ([], 3)


def test_imagefolder_walks_once_a_process_until_a_folder_changes(tmp_path: Path, monkeypatch) -> None:
    """The check's count, the store's fingerprint and the auto order: one walk of the files a
    command, the fingerprint as its own walk makes it."""
    image_tree(tmp_path / "train")
    image_tree(tmp_path / "val")
    walks = []
    walk = ImageFolder._walk
    monkeypatch.setattr(ImageFolder, "_walk", lambda self: walks.append(1) or walk(self))
    counts = ImageFolder(tmp_path).split_counts()
    assert ImageFolder(tmp_path).split_counts() == counts and len(walks) == 2  # folders changed just now
    for folder in [tmp_path, *tmp_path.iterdir(), *tmp_path.glob("*/*")]:
        os.utime(folder, ns=(10 ** 18, 10 ** 18))  # as a data set's folders, unchanged for days
    assert [ImageFolder(tmp_path).split_counts() for _ in range(2)] == [counts] * 2 and len(walks) == 3
    assert ImageFolder(tmp_path).fingerprint() == source_fingerprint(
        "imagefolder", {"holdout": 0.25, "seed": 0}, tree_stats(tmp_path)) and len(walks) == 3
    save(tmp_path / "val" / "a.b" / "new.png", noise((4, 4)))
    assert ImageFolder(tmp_path).split_counts() == counts + Counter({("test", 0): 1}) and len(walks) == 4


def test_imagefolder_counts_a_linked_class_folder(tmp_path: Path) -> None:
    """The walk does not follow links; a class folder that is one is counted as items() lists it."""
    image_tree(tmp_path / "elsewhere")
    (tmp_path / "data").mkdir()
    for folder in (tmp_path / "elsewhere").iterdir():
        (tmp_path / "data" / folder.name).symlink_to(folder, target_is_directory=True)
    source = ImageFolder(tmp_path / "data", holdout=0.3)
    assert split_counts(source) == Counter((item.split, item.label) for item in source.items())


def test_imagefolder_empty_class_folder(tmp_path: Path) -> None:
    image_tree(tmp_path)
    (tmp_path / "empty class").mkdir()
    (tmp_path / "empty class" / "readme.txt").write_text("only this")
    with pytest.raises(BadSource, match="empty class"):
        ImageFolder(tmp_path).items()


def test_imagefolder_classes_must_agree_across_splits(tmp_path: Path) -> None:
    image_tree(tmp_path / "train")
    image_tree(tmp_path / "test")
    save(tmp_path / "train" / "extra" / "x.png", noise((4, 4)))
    with pytest.raises(BadSource, match="extra"):
        ImageFolder(tmp_path)


def test_imagefolder_fingerprint_changes_with_a_file(tmp_path: Path) -> None:
    image_tree(tmp_path)
    before = ImageFolder(tmp_path).fingerprint()
    assert ImageFolder(tmp_path, seed=1).fingerprint() != before
    save(tmp_path / "a.b" / "img 0.png", noise((12, 10), seed=99))
    assert ImageFolder(tmp_path).fingerprint() != before


def test_tree_listing_is_os_walk_order_with_sizes_and_times(tmp_path: Path) -> None:
    """The fingerprint's listing: every file once, os.walk's order, links to folders not followed."""
    for rel in ("b/2.jpg", "b/10.jpg", "a/x/deep.png", "a/top.jpg", ".hidden", "z.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    expected = []
    for folder, dirs, files in os.walk(tmp_path):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            expected.append(f"{os.path.relpath(path, tmp_path)} {os.stat(path).st_size} {os.stat(path).st_mtime_ns}")
    assert list(tree_stats(tmp_path)) == expected
    assert [line.split()[0] for line in expected] == [".hidden", "z.txt", "a/top.jpg", "a/x/deep.png", "b/10.jpg",
                                                      "b/2.jpg"]


# --- decoding -----------------------------------------------------------------------------

def test_any_mode_loads_as_rgb(tmp_path: Path) -> None:
    grey = save(tmp_path / "grey.png", Image.new("L", (6, 4), 128))
    grey16 = save(tmp_path / "grey16.png", Image.fromarray(np.full((4, 6), 128 * 256, np.uint16)))
    cmyk = save(tmp_path / "cmyk.jpg", Image.new("CMYK", (6, 4), (0, 255, 255, 0)))
    palette = Image.new("P", (6, 4), 1)
    palette.putpalette([9, 9, 9, 200, 10, 10])
    palette.putpixel((0, 0), 0)
    palette = save(tmp_path / "palette.png", palette, transparency=0)
    rgba = Image.new("RGBA", (6, 4), (10, 200, 10, 255))
    rgba.putpixel((0, 0), (255, 255, 255, 0))
    rgba = save(tmp_path / "rgba.png", rgba)
    images = {path.stem: read_image(path) for path in (grey, grey16, cmyk, palette, rgba)}
    assert all(image.mode == "RGB" and image.size == (6, 4) for image in images.values())
    assert images["grey"].getpixel((1, 1)) == images["grey16"].getpixel((1, 1)) == (128, 128, 128)
    assert images["palette"].getpixel((0, 0)) == (0, 0, 0)  # transparent: composited on black
    assert images["palette"].getpixel((1, 1)) == (200, 10, 10)
    assert images["rgba"].getpixel((0, 0)) == (0, 0, 0)
    assert images["rgba"].getpixel((1, 1)) == (10, 200, 10)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (30, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (15, 0, 30, 20))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    image = read_image(save(tmp_path / "rotated.jpg", stored, exif=exif, quality=95))
    assert image.size == (20, 30)
    top, bottom = image.getpixel((10, 3)), image.getpixel((10, 26))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top, blue below


def write_bad_files(folder: Path) -> None:
    jpeg = save(folder / "good.jpg", noise((64, 64)), quality=95).read_bytes()
    files = {"corrupt.jpg": os.urandom(2000), "truncated.jpg": jpeg[: len(jpeg) // 2], "empty.png": b""}
    for name, data in files.items():
        (folder / name).write_bytes(data)


@pytest.mark.parametrize("name", ["corrupt.jpg", "truncated.jpg", "empty.png"])
def test_bad_image_names_the_file(tmp_path: Path, name: str) -> None:
    image_tree(tmp_path / "train")
    image_tree(tmp_path / "test")
    write_bad_files(tmp_path / "test" / "a.b")
    source = ImageFolder(tmp_path)
    item = next(i for i in source.items() if i.id.endswith(name))
    with pytest.raises(BadImage, match=name):
        source.load(item)


# --- HDF5 ---------------------------------------------------------------------------------

def test_hdf5_reads_rows_labels_splits_and_names(tmp_path: Path) -> None:
    split = np.array([b"train", b"train", b"val", b"test", b"test", b"train"])
    path = write_h5(tmp_path / "d.h5", split=split, class_names=["sit", "stand", "wave"])
    source = open_source(f"hdf5:{path}")
    items = source.items()
    assert source.classes == ["sit", "stand", "wave"]
    assert [i.split for i in items] == ["train", "train", "val", "test", "test", "train"]
    assert [i.label for i in items] == [0, 1, 2, 0, 1, 2]
    image = source.load(items[2])
    assert image.mode == "RGB" and image.size == (5, 4)
    with h5py.File(path) as f:
        assert np.array_equal(np.asarray(image), f["images"][2])
    assert pickle.loads(pickle.dumps(source)).load(items[3]).size == (5, 4)  # picklable after a load


def test_hdf5_int_splits_and_default_names(tmp_path: Path) -> None:
    source = HDF5Source(write_h5(tmp_path / "d.h5", split=np.array([0, 0, 1, 2, 2, 0])))
    assert source.classes == ["class_0", "class_1", "class_2"]
    assert [i.split for i in source.items()][2:4] == ["val", "test"]


def test_hdf5_without_a_split_holds_out_a_seeded_test_fraction_as_imagefolder_does(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "d.h5", n=40, labels=np.arange(40) % 2)
    splits = [i.split for i in open_source(f"hdf5:{path}").items()]
    assert splits.count("test") == 10 and splits.count("train") == 30  # 25% of each class by default
    held = open_source(f"hdf5:{path}", holdout=0.5, seed=3).items()
    assert [i.split for i in held].count("test") == 20
    assert [i.split for i in held] != [i.split for i in open_source(f"hdf5:{path}", holdout=0.5).items()]
    assert HDF5Source(path, holdout=0.5).fingerprint() != HDF5Source(path).fingerprint()
    given = write_h5(tmp_path / "split.h5", split=np.array([0, 0, 1, 2, 2, 0]))
    assert HDF5Source(given, holdout=0.5).fingerprint() == HDF5Source(given).fingerprint()  # no holdout made


FORKED_LOADS = """
import multiprocessing, sys
from pipeline.data.hdf5 import HDF5Source

def size(item):
    return source.load(item).size

source = HDF5Source(sys.argv[1])
items = source.items()
source.load(items[0])  # the parent holds an open handle before forking
with multiprocessing.get_context("fork").Pool(2) as pool:
    print(pool.map(size, items))
"""


def test_hdf5_loads_in_forked_workers_of_a_parent_holding_a_handle(tmp_path: Path) -> None:
    # In a fresh interpreter: forked from pytest, whose earlier tests leave threads (and
    # their locks) behind, a worker can hang before it runs a line of ours.
    done = subprocess.run([sys.executable, "-c", FORKED_LOADS, str(write_h5(tmp_path / "d.h5"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == str([(5, 4)] * 6)


@pytest.mark.parametrize("kwargs, dataset", [
    ({"labels": np.zeros(5, np.int64)}, "labels"),                    # mismatched lengths
    ({"labels": np.array([0, 1, 2, 3, 0, 1]), "class_names": ["a", "b", "c"]}, "labels"),  # out of range
    ({"images": np.zeros((6, 4, 5), np.uint8)}, "images"),            # wrong dims
    ({"images": np.zeros((6, 4, 5, 3), np.float32)}, "images"),       # wrong dtype
    ({"split": np.array([b"train"] * 5 + [b"holdout"])}, "split"),    # unknown split
])
def test_hdf5_bad_layout_names_file_and_dataset(tmp_path: Path, kwargs: dict, dataset: str) -> None:
    path = write_h5(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(BadSource, match=rf"bad\.h5.*'{dataset}'"):
        HDF5Source(path)


def test_hdf5_fingerprint_changes_with_the_file(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "d.h5")
    before = HDF5Source(path).fingerprint()
    assert HDF5Source(path).fingerprint() == before
    write_h5(path, n=7)
    assert HDF5Source(path).fingerprint() != before


# --- open_source and carve_validation -----------------------------------------------------

@pytest.mark.parametrize("spec", ["coco:/data", "stanford40:", "imagefolder:/no/such/folder"])
def test_open_source_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(BadSource, match="valid kinds") as error:
        open_source(spec)
    assert repr(spec) in str(error.value)


def test_open_source_passes_options_and_rejects_unknown_ones(tmp_path: Path) -> None:
    image_tree(tmp_path, per_class=4)
    assert sum(i.split == "test" for i in open_source(f"imagefolder:{tmp_path}", holdout=0.5).items()) == 6
    with pytest.raises(BadSource, match="crop_person"):
        open_source(f"imagefolder:{tmp_path}", crop_person=True)
    assert len(open_source("synthetic", train_per_class=2, test_per_class=1).items()) > 0


def split_items() -> Items:
    train = [Item(f"{c}-{n}", c, "train", n) for c in range(3) for n in range(10)]
    return Items.of(train + [Item(f"t{c}", c, "test", 0) for c in range(3)])


def test_items_are_columns_that_give_back_each_item() -> None:
    listed = list(split_items())
    items = Items.of(listed)
    assert list(items) == listed and items[4] == listed[4] and len(items) == len(listed)
    assert list(items[2:5]) == listed[2:5] and list(items[np.array([7, 0])]) == [listed[7], listed[0]]
    assert items.labels.dtype == np.int32 and items.splits.dtype == np.uint8 and items.keys.dtype == np.int64
    assert pickle.loads(pickle.dumps(items[3:9])) == items[3:9]  # what a store shard's task is sent
    named = Items.of([Item("a/b.jpg", 1, "test", "a/b.jpg")])
    assert named[0] == Item("a/b.jpg", 1, "test", "a/b.jpg")
    assert Items(named.ids, named.labels, named.splits, None) == named  # no keys: the ids are


def test_carve_validation_is_stratified_seeded_and_deterministic() -> None:
    items = split_items()
    carved = carve_validation(items, 0.2, seed=1)
    assert [i.id for i in carved] == [i.id for i in items]
    assert all(sum(i.split == "val" and i.label == c for i in carved) == 2 for c in range(3))
    assert [i.split for i in carved[-3:]] == ["test"] * 3
    assert carve_validation(items, 0.2, seed=1) == carved
    assert carve_validation(items, 0.2, seed=2) != carved
    shuffled = Items.of(random.Random(0).sample(list(items), len(items)))
    assert set(carve_validation(shuffled, 0.2, seed=1)) == set(carved)  # order of input is irrelevant


def test_carve_validation_leaves_zero_fraction_and_existing_val_alone() -> None:
    items = split_items()
    assert carve_validation(items, 0.0, seed=1) == items
    with_val = Items.of([*items[:-1], Item("v", 0, "val", 0)])
    assert carve_validation(with_val, 0.5, seed=1) == with_val


# --- the real Stanford 40 -----------------------------------------------------------------

@pytest.fixture(scope="module")
def real() -> Stanford40:
    if not (REAL_STANFORD / "ImageSplits").is_dir():
        pytest.skip(f"real Stanford 40 not found at {REAL_STANFORD}")
    return Stanford40(REAL_STANFORD, crop_person=True)


def test_real_stanford_counts(real: Stanford40) -> None:
    items = real.items()
    assert len(items) == 9532 and len(real.classes) == 40
    assert sum(i.split == "train" for i in items) == 4000
    assert sum(i.split == "test" for i in items) == 5532


@pytest.mark.slow
def test_real_stanford_boxes_lie_inside_their_images(real: Stanford40) -> None:
    for item in real.items():
        with Image.open(REAL_STANFORD / "JPEGImages" / item.key) as image:  # header only, no decode
            width, height = image.size
        x0, y0, x1, y1 = real.person_box(item, (width, height))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, item.id


def test_real_stanford_images_load_as_rgb(real: Stanford40) -> None:
    items = real.items()
    for item in (items[0], items[4000], items[-1]):
        whole = Stanford40(REAL_STANFORD).load(item)
        crop = real.load(item)
        assert whole.mode == crop.mode == "RGB" and min(whole.size) == 160
        assert crop.width <= whole.width and crop.height <= whole.height

