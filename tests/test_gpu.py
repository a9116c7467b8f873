"""On a CUDA GPU (`pytest -m gpu`; skipped without one): training and the teacher pass give
what they give on the CPU, to the tolerances stated."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import zarr
from support.config import TEACHER, TINY_VIT
from support.slow_runs import assert_same_files

import models
from cache.reader import TeacherCache
from pipeline import inference
from pipeline.data.imagestore import ImageStore
from pipeline.spec import parse_spec
from pipeline.teacher.teacher_pass import cache_teacher
from pipeline.training.build import Distill, TrainSetup, build_run
from pipeline.training.loader import TrainLoader
from pipeline.training.losses import DistillationLoss
from pipeline.training.train import fit, student_loss, train_epoch
from tasks.config import train_settings

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture
def no_tf32():
    """Plain fp32 on the GPU too: TF32 convolutions (cuDNN's default) round to 10 bits."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def kd_losses(tiny_data, device: torch.device, epochs: int = 2) -> list[float]:
    """Every step's loss of a seeded tiny ViT distilling from the cache on `device`, fp32."""
    store, cache = ImageStore(tiny_data["store"]), TeacherCache(tiny_data["cache"])
    name, kwargs = parse_spec(TINY_VIT)
    torch.manual_seed(0)
    net = models.create(name, len(store.classes), **kwargs).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_of = student_loss(net, DistillationLoss(0.7, 4.0))
    loader = TrainLoader(store, 32, 8, seed=0, cache=cache, device=device)
    return [loss for epoch in range(epochs) for loss in train_epoch(loss_of, opt, loader.epoch(epoch), lambda i: 1e-3)]


def test_student_on_cuda_follows_the_cpu_loss_curve(tiny_data, no_tf32):
    """Same seed, same batches, fp32: the first step's loss agrees to 1e-4 (only kernels
    differ), and the curve over 2 epochs stays within 1% as rounding compounds in Adam."""
    cpu, cuda = kd_losses(tiny_data, CPU), kd_losses(tiny_data, CUDA)
    assert len(cuda) == len(cpu) > 4
    assert cuda[0] == pytest.approx(cpu[0], rel=1e-4)
    assert np.allclose(cuda, cpu, rtol=1e-2)


def test_cache_written_on_cuda_equals_the_cpu_cache(tiny_data, tmp_path, no_tf32):
    """fp32 teacher pass on the GPU: every stored output within float16 rounding of the
    CPU cache's (the tolerance tests/test_cache.py allows between batch sizes)."""
    store = ImageStore(tiny_data["store"])
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path / "cuda.zarr"), device="cuda")
    dim = TeacherCache(tiny_data["cache"]).eval_features.shape[1]
    cache_teacher(job, store.rows("train"), len(store.labels), dim, {"identity": tiny_data["identity"]},
                  "synchronous", 1, 16)
    cpu, cuda = zarr.open_group(tiny_data["cache"], mode="r"), zarr.open_group(job.out, mode="r")
    assert np.array_equal(cpu["aug/params"][...], cuda["aug/params"][...])
    for name in ("eval/logits", "eval/features", "aug/logits", "aug/features"):
        assert cuda[name].dtype == np.float16
        assert np.allclose(cpu[name][...], cuda[name][...], rtol=2e-3, atol=2e-3), name


def test_overlapped_pass_on_cuda_writes_the_serial_pass_s_cache(tiny_data, tmp_path, monkeypatch):
    """Reading ahead on a CUDA stream of its own and bringing the outputs back on a thread
    write, byte for byte, the cache of the same pass run one stage at a time: the streams
    are synchronised and no buffer is reused early. Small batches, so each shard has several."""
    store = ImageStore(tiny_data["store"])
    dim = TeacherCache(tiny_data["cache"]).eval_features.shape[1]
    for overlap in (False, True):
        monkeypatch.setattr(inference, "overlapped", lambda device, overlap=overlap: overlap)
        job = dataclasses.replace(tiny_data["job"], out=str(tmp_path / f"overlap-{overlap}.zarr"), device="cuda",
                                  batch_size=4)
        cache_teacher(job, store.rows("train"), len(store.labels), dim, {"identity": tiny_data["identity"]},
                      "synchronous", 1, 16)
    assert_same_files(tmp_path / "overlap-True.zarr", tmp_path / "overlap-False.zarr")

@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda_learns(tiny_data, tmp_path, precision):
    """bf16 autocast, and fp16 with its GradScaler: finite float32 losses that fall."""
    name, kwargs = parse_spec(TINY_VIT)
    settings = train_settings(epochs=3, batch_size=8, image_size=32)
    setup = TrainSetup(model=name, kwargs=kwargs, settings=settings, precision=precision)
    history = fit(build_run(setup, ImageStore(tiny_data["store"]), device=CUDA), tmp_path)
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def online_loss(tiny_data, folder, device: torch.device, precision: str = "fp32") -> float:
    """The first epoch's mean loss of a seeded tiny ViT distilling online: the teacher and
    the student on `device`, the fresh views rendered there."""
    store = ImageStore(tiny_data["store"])
    name, kwargs = parse_spec(TINY_VIT)
    teacher = models.load_weights(models.create(TEACHER, len(store.classes)), tiny_data["weights"])
    setup = TrainSetup(model=name, kwargs=kwargs, settings=train_settings(epochs=1, batch_size=8, image_size=32),
                       distill=Distill(alpha=0.7, temperature=4.0, beta=0.0, feature_loss="mse", hard=False),
                       precision=precision)
    history = fit(build_run(setup, store, teacher=teacher, device=device), folder)
    return history[0]["loss"]


def test_online_distillation_on_cuda_follows_the_cpu(tiny_data, tmp_path, no_tf32):
    """fp32: the same epoch's mean loss on both devices to 1%; bf16 autocast: finite."""
    cpu, cuda = online_loss(tiny_data, tmp_path / "cpu", CPU), online_loss(tiny_data, tmp_path / "cuda", CUDA)
    assert cuda == pytest.approx(cpu, rel=1e-2)
    assert np.isfinite(online_loss(tiny_data, tmp_path / "bf16", CUDA, "bf16"))


def test_a_recipe_record_renders_on_cuda_as_on_the_cpu(tiny_data):
    """RandAugment, mixup and cutmix on the device: the same records give the CPU's pixels,
    to float rounding (resampling and convolution kernels differ)."""
    from pipeline.data.imagestore import pixels
    from pipeline.views.records import Partners, Recipe, image_rows, partner_rows, random_views, render
    store, recipe = ImageStore(tiny_data["store"]), Recipe((2, 9), 0.8, 1.0)
    rows = store.rows("train")
    records = random_views(0, rows, 1, 32, recipe, Partners(rows, store.images.shard_rows))[:, 0]
    read, image_of, partner_of = image_rows(rows, partner_rows(records, recipe))
    on = {device: render(pixels(store.images, read, device), records, 32, image_of, recipe, partner_of).cpu()
          for device in (CPU, CUDA)}
    assert torch.allclose(on[CUDA], on[CPU], atol=1e-3)
