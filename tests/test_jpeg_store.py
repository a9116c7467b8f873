"""The jpeg image store ([data] image_format = jpeg): the raw store's images within the
codec's error, read alike by the teacher pass and the student loader, damage named, a
killed build resumed to the same bytes, bad settings refused."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import zarr
from support.damage import damage
from support.kills import Blocks, kill_after_first_block
from support.slow_runs import SIZE, assert_same_files, save_teacher, teacher_job, write_cache, write_store

from cache.storage import blocks
from cache.storage import rows as rows_module
from cache.storage.integrity import DamagedData
from pipeline import inference
from pipeline.data.imagestore import ImageStore, JpegRows, pixels
from pipeline.training import loader
from pipeline.training.loader import TrainLoader
from tasks.check import config_problems
from tasks.data import PrepareDataset

QUALITY = 90
# The synthetic images carry pixel noise at 20 px, JPEG's worst case: at q90 the mean error
# measured 4.2 levels (the worst image 5.4); on Stanford 40 it is 2.8 at 64 px, 1.0 at 256.
MEAN_ERROR = 5.0


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stores")
    jpeg_blocks = Blocks()
    write_store(root / "raw.zarr")
    write_store(root / "jpeg.zarr", progress=jpeg_blocks, jpeg_quality=QUALITY)
    return {"raw": root / "raw.zarr", "jpeg": root / "jpeg.zarr", "blocks": jpeg_blocks.todo}


def test_jpeg_store_holds_the_raw_store_s_images_within_the_codec_s_error(stores):
    raw, jpeg = ImageStore(stores["raw"]), ImageStore(stores["jpeg"])
    rows = np.arange(len(raw.labels))
    expected, got = raw.images[rows], jpeg.images[rows]
    assert isinstance(jpeg.images, JpegRows)
    assert got.shape == expected.shape == jpeg.images.shape and got.dtype == jpeg.images.dtype == np.uint8
    assert len(jpeg.images) == len(raw.images) and jpeg.size == raw.size == SIZE
    assert np.abs(got.astype(int) - expected).mean() < MEAN_ERROR
    for name in ("labels", "split", "ids", "classes"):
        assert np.array_equal(getattr(jpeg, name), getattr(raw, name)), name
    assert (jpeg.manifest["image_format"], jpeg.manifest["jpeg_quality"]) == ("jpeg", QUALITY)
    assert (raw.manifest["image_format"], raw.manifest["jpeg_quality"]) == ("raw", None)
    assert "image_format" not in zarr.open_array(str(stores["raw"] / "images")).attrs  # raw arrays as before


def test_encoded_bytes_in_memory_and_on_disk_decode_alike(stores):
    rows = np.array([40, 3, 3, 17, 0])  # any order, repeats, several shards
    in_memory, on_disk = ImageStore(stores["jpeg"]).images, ImageStore(stores["jpeg"], budget=0).images
    assert np.array_equal(in_memory.take(rows), on_disk[rows])
    assert in_memory.take(np.array([], dtype=int)).shape == (0, SIZE, SIZE, 3)


def test_a_store_read_from_disk_is_not_listed(stores, monkeypatch):
    """Budget 0 (each block of the teacher pass) never sums the shard files' sizes: a listing
    of the whole store, which grows with N."""

    def listed(array):
        raise AssertionError(f"{array} listed")

    monkeypatch.setattr(rows_module, "in_memory_bytes", listed)
    on_disk = ImageStore(stores["jpeg"], budget=0).images
    assert on_disk.take(np.array([3])).shape == (1, SIZE, SIZE, 3)


def test_the_teacher_pass_and_the_student_loader_read_the_same_pixels(stores, tmp_path, monkeypatch):
    """Both read through imagestore.pixels, the teacher pass from disk, the loader from memory."""
    read: dict[str, dict[int, torch.Tensor]] = {"teacher": {}, "loader": {}}

    def spy(who: str):
        def reading(images, rows, device):
            out = pixels(images, rows, device)
            read[who].update(zip(np.asarray(rows).tolist(), out))
            return out
        return reading

    monkeypatch.setattr(inference, "pixels", spy("teacher"))
    monkeypatch.setattr(loader, "pixels", spy("loader"))
    save_teacher(tmp_path / "teacher.safetensors")
    write_cache(teacher_job(stores["jpeg"], tmp_path / "teacher.safetensors", tmp_path / "cache.zarr"))
    store = ImageStore(stores["jpeg"])
    for _ in TrainLoader(store, image_size=32, batch_size=8, seed=0).epoch(0):
        pass
    assert set(read["loader"]) == set(store.rows("train")) and set(read["teacher"]) == set(range(len(store.ids)))
    for row, seen in read["loader"].items():
        assert torch.equal(seen, read["teacher"][row]), row


def test_a_damaged_jpeg_shard_is_named_like_a_raw_one(stores, tmp_path):
    work = tmp_path / "store.zarr"
    shutil.copytree(stores["jpeg"], work)
    file = damage(work, "images", 1, "flip")
    store = ImageStore(work, budget=0)  # reads images from disk, batch by batch
    store.images.take(np.arange(8))  # an undamaged shard
    with pytest.raises(DamagedData, match="rerun your command") as err:
        store.images.take(np.array([9, 8]))  # the first chunk of shard 1 is damaged
    assert f"array images, shard file {file}" in str(err.value)
    assert not (work / blocks.MANIFEST).exists()


def test_a_stored_payload_that_is_no_jpeg_is_named_with_its_row(stores, tmp_path):
    """Bytes that pass their checksum but do not decode were written wrong: named, and the
    store marked for a rebuild like any damage."""
    work = tmp_path / "store.zarr"
    shutil.copytree(stores["jpeg"], work)
    zarr.open_array(str(work / "images"), mode="r+")[13:14] = np.array([b"no jpeg"], dtype=object)
    store = ImageStore(work)
    with pytest.raises(DamagedData, match=r"array images, shard file .*/images/c/1: row 13: not a decodable "
                                          r"20x20 JPEG") as err:
        store.images.take(np.array([2, 13]))
    assert f"{work} is now unfinished" in str(err.value)


@pytest.mark.slow
def test_killed_jpeg_store_build_resumes_to_the_same_store(stores, tmp_path):
    store = tmp_path / "store.zarr"
    done = kill_after_first_block(["store", str(store), str(QUALITY)], store, tmp_path / "log")
    assert 1 <= done < stores["blocks"]
    rerun = Blocks()
    write_store(store, progress=rerun, jpeg_quality=QUALITY)
    assert rerun.todo == stores["blocks"] - done
    assert_same_files(store, stores["jpeg"])


def test_image_format_and_quality_are_settings_of_the_store(luigi_config):
    raw = PrepareDataset("demo")
    # A raw store's settings (and fingerprint) are those from before jpeg stores, whatever the quality.
    assert "image_format" not in raw.settings() and "jpeg_quality" not in raw.settings()
    prints = [raw.fingerprint()]
    luigi_config("data", "jpeg_quality", "50")
    assert PrepareDataset("demo").fingerprint() == prints[0]
    luigi_config("data", "image_format", "jpeg")
    jpeg = PrepareDataset("demo")
    assert (jpeg.settings()["image_format"], jpeg.settings()["jpeg_quality"]) == ("jpeg", 50)
    prints.append(jpeg.fingerprint())
    luigi_config("data", "jpeg_quality", str(QUALITY))
    prints.append(PrepareDataset("demo").fingerprint())
    assert len(set(prints)) == 3


@pytest.mark.parametrize("key, value, fix", [
    ("image_format", "png", "not a valid choice"), ("jpeg_quality", "0", "must be in [1, 100]"),
    ("jpeg_quality", "101", "must be in [1, 100]")])
def test_config_check_refuses_a_bad_image_format_or_quality(luigi_config, key, value, fix):
    luigi_config("data", key, value)
    [problem] = config_problems()
    assert (problem.section, problem.key, str(problem.value)) == ("data", key, value)
    assert fix in problem.fix


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_jpeg_rows_bound_for_cuda_are_decoded_there_like_on_the_cpu(stores):
    images, rows = ImageStore(stores["jpeg"]).images, np.array([5, 0, 33])
    on_gpu = pixels(images, rows, torch.device("cuda"))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == (3, SIZE, SIZE, 3) and on_gpu.dtype == torch.uint8
    # nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a few levels.
    assert (on_gpu.cpu().int() - torch.as_tensor(images.take(rows)).int()).abs().float().mean() < 3
