"""One task per GPU, without GPUs: fake devices ("fake:0", "fake:1") and more concurrent
holders than devices, in separate processes. No two holders ever hold one device at once,
every holder gets one, and a holder killed while holding releases its device; through
Luigi's own workers too, and for the dask workers of the teacher pass."""
from __future__ import annotations

import configparser
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client
from support.config import tiny_settings

from cache.storage.blocks import run_blocks
from pipeline.runtime import gpus
from pipeline.runtime.cluster import gpu_cluster
from tasks import CacheTeacher, TrainStudent

FAKE = ["fake:0", "fake:1"]
REPO = Path(__file__).resolve().parents[1]


def hold(lock_dir: Path, out: Path, seconds: float) -> None:
    """Hold a fake device for `seconds`; record (device, start, end) while holding it."""
    with gpus.hold_device(FAKE, lock_dir, owner=out.name, poll=0.05) as device:
        start = time.monotonic()
        time.sleep(seconds)
        out.write_text(json.dumps({"device": device, "start": start, "end": time.monotonic()}))


def assert_no_shared_device(records: list[dict]) -> None:
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            if a["device"] == b["device"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def start(target, *args) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


@pytest.mark.slow
def test_more_holders_than_devices_never_share_one(tmp_path):
    holders = [start(hold, tmp_path / "locks", tmp_path / f"holder-{i}.json", 0.3) for i in range(5)]
    for process in holders:
        process.join(60)
        assert process.exitcode == 0
    records = [json.loads((tmp_path / f"holder-{i}.json").read_text()) for i in range(5)]
    assert {r["device"] for r in records} == set(FAKE)
    assert_no_shared_device(records)


def held_locks(locks: Path) -> int:
    return len([p for p in locks.glob("*.lock") if p.read_text()])


def wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_holder_releases_its_device(tmp_path):
    locks = tmp_path / "locks"
    killed = start(hold, locks, tmp_path / "killed.json", 3600)
    wait_until(lambda: held_locks(locks) == 1)
    other = start(hold, locks, tmp_path / "other.json", 3600)  # both devices held for an hour
    wait_until(lambda: held_locks(locks) == 2)
    waiting = start(hold, locks, tmp_path / "waiting.json", 0)
    try:
        time.sleep(0.5)
        assert waiting.is_alive()
        os.kill(killed.pid, signal.SIGKILL)
        waiting.join(60)
        assert waiting.exitcode == 0
        assert json.loads((tmp_path / "waiting.json").read_text())["device"] in FAKE
    finally:
        for process in (killed, other, waiting):
            process.kill()


def test_hold_device_needs_a_device(tmp_path):
    with pytest.raises(ValueError, match="at least one device"):
        with gpus.hold_device([], tmp_path):
            pass


def test_which_gpus_a_device_setting_shares_out():
    assert gpus.device_gpus("cpu", "cuda:0") == []
    assert gpus.device_gpus("cuda:1") == ["cuda:1"]
    assert gpus.device_gpus("cuda", "cuda:0, cuda:2") == ["cuda:0", "cuda:2"]
    assert gpus.device_gpus("auto") == gpus.visible_gpus()


def test_gpu_resource_only_for_tasks_on_gpus(luigi_config):
    student = TrainStudent("demo", "vit", "kd")
    luigi_config("compute", "device", "cpu")
    assert "gpu" not in student.process_resources()
    luigi_config("compute", "device", "auto")
    luigi_config("compute", "gpus", ",".join(FAKE))
    student = TrainStudent("demo", "vit", "kd")
    assert student.process_resources() == {"train": 1, "gpu": 1}
    assert CacheTeacher("demo").process_resources() == {"teacher": 1, "gpu": 1}
    luigi_config("compute", "scheduler", "gpus")  # its dask workers take every GPU, one each
    assert CacheTeacher("demo").process_resources() == {"teacher": 1, "gpu": 2}


def test_a_data_parallel_student_holds_a_gpu_per_rank(luigi_config, tmp_path):
    """[train] processes = 2 on GPUs: Luigi's gpu resource counts 2, the task holds two
    distinct GPUs (their locks) while it works, and its ranks see exactly those."""
    luigi_config("compute", "device", "auto")
    luigi_config("compute", "gpus", "fake:0,fake:1,fake:2")
    luigi_config("compute", "gpu_lock_dir", str(tmp_path / "locks"))
    luigi_config("train", "processes", "2")
    student = TrainStudent("demo", "vit", "kd")
    assert student.process_resources() == {"train": 1, "gpu": 2}
    with gpus.hold_device(["fake:0"], tmp_path / "locks", "another task"), student.device_held():
        assert sorted(student.held_devices) == ["fake:1", "fake:2"]
        assert student.rank_env()["CUDA_VISIBLE_DEVICES"] in ("1,2", "2,1")
    assert student.held_devices == []


def test_gpu_resource_defaults_to_the_gpus_found(luigi_config):
    from luigi.configuration import get_config

    from tasks.config import default_gpu_resource
    luigi_config("compute", "device", "auto")
    luigi_config("compute", "gpus", ",".join(FAKE))
    default_gpu_resource()
    assert get_config().getint("resources", "gpu") == 2
    luigi_config("resources", "gpu", "1")  # luigi.cfg's own count stands
    default_gpu_resource()
    assert get_config().getint("resources", "gpu") == 1


@pytest.mark.slow
def test_luigi_workers_never_share_a_gpu(tmp_path):
    """`luigi --workers 3` with [resources] gpu = 2 and two fake GPUs runs four GPU tasks, two
    at a time, each in its own forked process on a GPU of its own, and never initialises CUDA."""
    settings = tiny_settings(str(tmp_path / "work"))
    settings["compute"].update(device="auto", gpus=",".join(FAKE))
    settings["resources"] = {"gpu": "2"}
    config = configparser.ConfigParser()
    config.read_dict(settings)
    with open(tmp_path / "luigi.cfg", "w") as f:
        config.write(f)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(tmp_path / "luigi.cfg"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    run = subprocess.run([sys.executable, "-m", "luigi", "--module", "support.gpu_holders", "GpuHolders",
                          "--dataset", "demo", "--count", "4", "--workers", "3"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "work" / "demo").glob("hold-*/held.json")]
    assert len(records) == 4
    assert {r["device"] for r in records} <= set(FAKE) and len({r["pid"] for r in records}) == 4
    assert not any(r["cuda_initialised"] for r in records)
    assert_no_shared_device(records)


def held_by_worker(block: tuple) -> None:
    tag, start, stop = block
    Path(tag, f"{start}.json").write_text(json.dumps({"device": gpus.held(), "pid": os.getpid()}))


@pytest.mark.slow
def test_gpu_cluster_workers_hold_distinct_devices(tmp_path):
    """scheduler = gpus: each dask worker process holds its own device for its lifetime, and
    every block of run_blocks runs in a worker holding one; the devices are free afterwards."""
    with gpu_cluster(FAKE, tmp_path / "locks") as address, Client(address) as client:
        assert sorted(client.run(gpus.held).values()) == FAKE
        run_blocks(held_by_worker, [(str(tmp_path), start, start + 1) for start in range(8)], address)
    records = [json.loads((tmp_path / f"{start}.json").read_text()) for start in range(8)]
    assert {r["device"] for r in records} <= set(FAKE)
    assert len({r["pid"] for r in records if r["device"] == "fake:0"}) <= 1  # one process per device
    assert not [p for p in (tmp_path / "locks").glob("*.lock") if p.read_text()]  # released
