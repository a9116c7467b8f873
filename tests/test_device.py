"""[compute] device and precision: what they resolve to, that an absent device is refused
by name, and that precision, not the device, is part of a task's identity."""
from __future__ import annotations

import pytest
import torch

from pipeline.runtime.device import Precision, resolve_device, resolve_precision
from tasks import TrainStudent
from tasks.teacher import CacheTeacher, FineTuneTeacher

NO_GPU = pytest.mark.skipif(torch.cuda.device_count() > 0 or torch.backends.mps.is_available(),
                            reason="this machine has an accelerator")


def test_cpu_is_the_cpu_and_a_bad_name_is_refused_by_setting():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"\[compute\] device = gpu: use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


@NO_GPU
def test_without_an_accelerator_auto_is_the_cpu_and_cuda_is_refused():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"\[compute\] device = cuda:0: this machine has no CUDA GPU"):
        resolve_device("cuda:0")


def test_auto_precision_is_bf16_on_cuda_and_fp32_elsewhere():
    assert resolve_precision("auto", "cuda:1") == Precision("bf16")  # from the setting: no GPU needed
    assert resolve_precision("auto", "cpu") == Precision("fp32")
    assert resolve_precision("fp16", "cpu") == Precision("fp16")
    assert [Precision(p).scaled for p in ("fp32", "bf16", "fp16")] == [False, False, True]
    with pytest.raises(ValueError, match=r"\[compute\] precision = fp8"):
        Precision("fp8")


@pytest.mark.parametrize("name,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_runs_the_forward_in_the_precision(name, dtype):
    layer, x = torch.nn.Linear(4, 2), torch.rand(3, 4)
    with Precision(name).autocast(torch.device("cpu")):
        assert layer(x).dtype == dtype


@NO_GPU  # so that auto is fp32 here
def test_precision_changes_every_fingerprint_the_device_none(luigi_config):
    def folders() -> list:
        return [task.folder() for task in (FineTuneTeacher("demo"), CacheTeacher("demo"),
                                           TrainStudent("demo", "vit", "kd"), TrainStudent("demo", "vit", "baseline"))]
    fp32 = folders()
    luigi_config("compute", "precision", "fp32")
    luigi_config("compute", "device", "cuda:3")  # never looked up while fingerprinting
    assert folders() == fp32
    luigi_config("compute", "precision", "bf16")
    bf16 = folders()
    assert all(a != b for a, b in zip(fp32, bf16))
    luigi_config("compute", "device", "cpu")
    assert folders() == bf16
    luigi_config("compute", "precision", "auto")
    luigi_config("compute", "device", "cuda")
    assert folders() == bf16  # the resolved precision is what counts
