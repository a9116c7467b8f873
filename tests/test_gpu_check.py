"""The prepared device check, tests/gpu_check.sh, is valid bash and every command it runs
resolves: its benchmark arguments parse (both modes) and name timm models, and there are
gpu-marked tests for it to run. Its CPU mode runs it whole (about a minute here):
`OUT=/tmp/check GPU_CHECK_DEVICE=cpu bash tests/gpu_check.sh`."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import timm

from pipeline.bench import cache_vs_online as bench
from pipeline.spec import parse_spec

SCRIPT = Path(__file__).resolve().parent / "gpu_check.sh"


def bench_args(device: str) -> list[str]:
    """The BENCH array the script builds for GPU_CHECK_DEVICE=device."""
    block = re.search(r'^if \[ "\$DEVICE" = cpu \].*?^fi$', SCRIPT.read_text(), re.S | re.M).group(0)
    out = subprocess.run(["bash", "-c", f'DEVICE={device}\n{block}\nprintf "%s\\n" "${{BENCH[@]}}"'],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture
def parse_args(monkeypatch):
    """The benchmark's parser, as on a machine with a GPU (it rejects --device cuda without one)."""
    monkeypatch.setattr(bench, "device_problem", lambda device: None)
    return bench.parse_args


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_bench_arguments_parse(device, parse_args):
    s, _ = parse_args(bench_args(device))
    assert s.device == device
    assert all(timm.is_model(parse_spec(spec)[0]) for spec in (s.teacher, *s.students))


def test_realistic_size_on_the_gpu(parse_args):
    s, _ = parse_args(bench_args("cuda"))
    assert (s.image_size, s.teacher, s.reps, len(s.students), s.precision) == (224, "convnext_tiny", 2, 6, "bf16")


def test_there_are_gpu_tests_to_run():
    marked = {p.name for p in SCRIPT.parent.glob("test_*.py") if "mark.gpu" in p.read_text()}
    assert marked - {Path(__file__).name}
