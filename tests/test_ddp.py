"""One student trained data-parallel by torchrun on the CPU (gloo): 2 ranks x a share of
each batch end where 1 process x the whole batch ends; a killed rank fails the job naming
it, and the rerun resumes to the weights of an uninterrupted run; a SIGTERM of the task
stops every rank, and ranks.log keeps every launch."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from support.config import TEACHER, TINY_VIT
from support.kills import processes_naming, tiny_config, train_student, wait_for

from pipeline.spec import parse_spec
from pipeline.training.build import Distill, TrainSetup
from pipeline.training.distributed import RankFailed, launch, launch_command
from pipeline.training.job import OnlineTeacher, TrainJob
from tasks.config import train_settings

pytestmark = pytest.mark.slow  # each test starts torchrun and its ranks
REPO = Path(__file__).resolve().parents[1]
DISTILL = Distill(alpha=0.7, temperature=4.0, beta=0.5, feature_loss="mse", hard=False)
TOLERANCE = 2e-5  # float sums in another order over 2 epochs of AdamW; measured 4e-6 to 6e-6


def job(data: dict, folder: Path, mode: str, epochs: int = 2, device: str = "cpu", batch_size: int = 16,
        checkpoint_minutes: float = 0.0) -> TrainJob:
    name, kwargs = parse_spec(TINY_VIT)
    settings = train_settings(epochs=epochs, batch_size=batch_size, image_size=32, seed=0)
    online = OnlineTeacher(TEACHER, {}, str(data["weights"]))
    setup = TrainSetup(model=name, kwargs=kwargs, settings=settings, distill=DISTILL,
                       checkpoint_minutes=checkpoint_minutes)
    return TrainJob(setup, store=str(data["store"]),
                    workdir=str(folder), weights=str(folder / "weights.safetensors"), memory_budget=1 << 30,
                    cache=str(data["cache"]) if mode == "kd" else None, teacher=online if mode == "online" else None,
                    device=device)


def ranks(train: TrainJob, processes: int = 2) -> None:
    entry = ["pipeline.training.job", str(train.save(Path(train.workdir) / "job.json"))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launch(launch_command(entry, processes), Path(train.workdir) / "ranks.log", env)


def weights(train: TrainJob) -> dict[str, torch.Tensor]:
    return load_file(train.weights)


def assert_close(a: dict, b: dict, tolerance: float = TOLERANCE) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest weight difference {worst:.3g}")
    assert worst <= tolerance, worst


@pytest.mark.parametrize("mode", ["kd", "online"])
def test_two_ranks_end_where_one_process_ends(tiny_data, tmp_path, mode):
    one, two = job(tiny_data, tmp_path / "one", mode), job(tiny_data, tmp_path / "two", mode)
    history = one.run()
    ranks(two)
    assert_close(weights(one), weights(two))
    other = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [round(h["loss"], 4) for h in other] == [round(h["loss"], 4) for h in history]
    assert [h["val_top1"] for h in other] == [h["val_top1"] for h in history]


ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_GPU)])
def test_one_launched_rank_is_the_plain_path(tiny_data, tmp_path, device):
    """torchrun with one rank: DistributedDataParallel over gloo, or NCCL on a GPU (the device
    check runs it), ends where the plain in-process run ends."""
    plain, launched = job(tiny_data, tmp_path / "plain", "kd", device=device), job(tiny_data, tmp_path / "one", "kd",
                                                                                   device=device)
    plain.run()
    ranks(launched, processes=1)
    assert "rank 0 of 1" in (tmp_path / "one" / "ranks.log").read_text()
    assert_close(weights(plain), weights(launched), 1e-6)


def test_ranks_checkpoint_within_an_epoch_together(tiny_data, tmp_path):
    """Checkpoints as often as the ranks agree on one (every 8 steps): each a collective of
    both ranks, which neither skips nor deadlocks in; the run ends where one process ends."""
    one, two = (job(tiny_data, tmp_path / name, "kd", epochs=1, batch_size=2, checkpoint_minutes=1e-8)
                for name in ("one", "two"))
    one.run()
    ranks(two)
    assert re.findall(r"checkpoint after step (\d+) of epoch 1", (tmp_path / "two" / "ranks.log").read_text())[:2] == [
        "8", "16"]
    assert_close(weights(one), weights(two))


def test_killed_rank_fails_the_job_by_name_and_the_rerun_resumes(tiny_data, tmp_path):
    whole, killed = job(tiny_data, tmp_path / "whole", "kd", 40), job(tiny_data, tmp_path / "killed", "kd", 40)
    failure: list[Exception] = []
    runner = threading.Thread(target=lambda: _catch(failure, ranks, killed))
    runner.start()
    state = Path(killed.workdir) / "train_state.pt"
    while not state.exists() and runner.is_alive():
        time.sleep(0.05)
    os.kill(_rank_pid(1, killed), 9)
    runner.join()
    assert len(failure) == 1 and isinstance(failure[0], RankFailed)
    assert str(failure[0]).startswith("rank 1 of the data-parallel job failed (exit code -9)")
    assert not Path(killed.weights).exists()
    shutil.copytree(killed.workdir, tmp_path / "one")
    one = replace(killed, workdir=str(tmp_path / "one"), weights=str(tmp_path / "one" / "weights.safetensors"))

    ranks(killed)  # resumes after its last finished epoch
    assert "resuming" in (Path(killed.workdir) / "ranks.log").read_text()
    ranks(whole)
    assert_close(weights(whole), weights(killed), 1e-6)
    before = json.loads(torch.load(tmp_path / "one" / "train_state.pt", weights_only=True)["history"])
    after = one.run()  # the same stopped job resumed by one process, not restarted:
    assert after[:len(before)] == before and len(after) == 40
    assert_close(weights(whole), weights(one), 5e-4)  # float order over the epochs left; measured 2e-5 to 7e-5


def _catch(failures: list, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as error:  # noqa: BLE001 (the test looks at it)
        failures.append(error)


def _rank_pid(rank: int, train: TrainJob) -> int:
    """The process of `rank` in the job started for `train`."""
    while True:
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if "pipeline.training.job" in (proc.info["cmdline"] or []) and \
                        proc.environ().get("RANK") == str(rank) and train.workdir in " ".join(proc.info["cmdline"]):
                    return proc.pid
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_train_student_runs_data_parallel_through_luigi(luigi_config):
    """[train] processes = 2: the task's own folder (processes is no part of any fingerprint),
    its weights from rank 0, and both ranks' lines in ranks.log."""
    from support.build import build

    from tasks import TrainStudent
    single = TrainStudent("demo", "vit", "kd").folder()
    luigi_config("train", "processes", "2")
    task = TrainStudent("demo", "vit", "kd")
    ok, ran = build(task)
    assert ok and "TrainStudent" in [type(t).__name__ for t in ran]
    assert task.folder() == single and task.complete()
    lines = (task.folder() / "ranks.log").read_text()
    assert "[default0]" in lines and "[default1]" in lines


def test_sigterm_stops_every_rank_keeps_the_saved_epochs_and_a_rerun_resumes(tmp_path):
    """SIGTERM to Luigi's process alone, after rank 0's first epoch line reached Luigi's log:
    torchrun and both ranks stop with it, and the line names the epochs saved."""
    epochs = 30  # of 0.1 s: the job is stopped well before its last
    config = tiny_config(tmp_path, {"core": {"log_level": "INFO"}, "train": {"epochs": str(epochs), "processes": "2"}})
    task = r"TrainStudent_demo_baseline_vit_\w+"
    first = tmp_path / "first.log"
    proc = train_student(config, first)
    wait_for(proc, first, rf"{task}: epochs: 1/{epochs} \(")
    folder = next((tmp_path / "work" / "demo").glob("student-vit-baseline-*"))
    tic = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, first.read_text()[-3000:]
    seconds, left = time.monotonic() - tic, processes_naming(str(folder))
    print(f"stopped in {seconds:.1f} s")
    assert not left, f"processes {left} of the job outlived the task"
    assert seconds < 15
    line = re.search(rf"SIGTERM: {task} stopped at epochs (\d+)/{epochs} ", first.read_text())
    assert line, first.read_text()[-3000:]
    saved = torch.load(folder / "train_state.pt", weights_only=True)["epoch"]
    assert 1 <= int(line.group(1)) <= saved < epochs  # the line lags the checkpoint, never leads it

    second = tmp_path / "second.log"
    proc = train_student(config, second)
    assert proc.wait(timeout=300) == 0, second.read_text()[-3000:]
    assert re.search(rf"{task}: epochs: {saved}/{epochs}\n", second.read_text())  # it resumed where it stopped
    assert [epoch["epoch"] for epoch in json.loads((folder / "history.json").read_text())] == \
        list(range(1, epochs + 1))


def test_ranks_log_keeps_every_launch_and_a_failure_names_the_last(tmp_path):
    """Two launches of a stand-in for torchrun: ranks.log holds both, each under its header, and
    the second one's failure quotes its own lines only."""
    def stand_in(line: str, failure: str = "", code: int = 0) -> list[str]:
        return [sys.executable, "-c", f"print({line!r}); print({failure!r}); raise SystemExit({code})"]

    log = tmp_path / "ranks.log"
    launch(stand_in("[default1]:the first launch"), log)
    cause = "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9"
    with pytest.raises(RankFailed) as failure:
        launch(stand_in("[default1]:the second launch", cause, 1), log)
    assert "the second launch" in str(failure.value) and "the first launch" not in str(failure.value)
    text = log.read_text()
    assert text.index("the first launch") < text.index("the second launch")
    assert len(re.findall(r"^===== \d{4}-\d\d-\d\d .*: \S+ -c ", text, re.M)) == 2, text
