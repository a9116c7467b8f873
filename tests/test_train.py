"""Training: seeded, resumable, and in kd mode driven by the cache alone."""
import pytest
import timm
import torch
from support.config import TEACHER, TINY_VIT

from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.spec import parse_spec
from pipeline.training import train as train_module
from pipeline.training.build import Distill, TrainSetup, build_run
from pipeline.training.job import OnlineTeacher, TrainJob
from pipeline.training.settings import TrainSettings
from pipeline.training.train import StepLosses, fit, noted
from pipeline.views.records import Recipe
from tasks.config import train_settings

SETTINGS = train_settings(epochs=2, batch_size=16, image_size=32, seed=0)
DISTILL = Distill(alpha=0.7, temperature=4.0, beta=0.0, feature_loss="mse", hard=False)


def train(tiny_data, workdir, cache=False, settings=SETTINGS, precision="fp32", progress=None, checkpoint_minutes=0.0):
    name, model_kwargs = parse_spec(TINY_VIT)
    setup = TrainSetup(model=name, kwargs=model_kwargs, settings=settings, distill=DISTILL if cache else None,
                       precision=precision, checkpoint_minutes=checkpoint_minutes)
    run = build_run(setup, ImageStore(tiny_data["store"]), TeacherCache(tiny_data["cache"]) if cache else None)
    return run.net, fit(run, workdir, progress)


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_same_seed_same_model(tiny_data, tmp_path):
    first, history = train(tiny_data, tmp_path / "a")
    second, _ = train(tiny_data, tmp_path / "b")
    assert same_weights(first, second)
    assert [h["epoch"] for h in history] == [1, 2] and all("val_top1" in h for h in history)
    other, _ = train(tiny_data, tmp_path / "c", settings=TrainSettings(**{**vars(SETTINGS), "seed": 1}))
    assert not same_weights(first, other)


def test_kd_reads_only_the_cache_and_changes_the_result(tiny_data, tmp_path, monkeypatch):
    built = []
    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: built.append(name) or create(name, **kw))
    distilled, _ = train(tiny_data, tmp_path / "kd", cache=True)
    assert built == ["vit_tiny_patch16_224"] and TEACHER not in built
    baseline, _ = train(tiny_data, tmp_path / "baseline")
    assert not same_weights(distilled, baseline)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: with its GradScaler's state
def test_interrupted_training_resumes_to_the_same_weights(tiny_data, tmp_path, precision):
    kwargs = {"precision": precision}
    whole, history = train(tiny_data, tmp_path / "whole", cache=True, **kwargs)

    def stop_after_first_epoch(done, total, message=""):
        if done:  # 0 is the start
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, tmp_path / "resumed", cache=True, progress=stop_after_first_epoch, **kwargs)
    resumed, resumed_history = train(tiny_data, tmp_path / "resumed", cache=True, **kwargs)
    assert same_weights(whole, resumed)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]


def test_a_run_stopped_within_an_epoch_resumes_after_its_last_step_saved(tiny_data, tmp_path, monkeypatch):
    """Checkpoints every step (a minute of 0.6 us): stopped after the third step of epoch 2,
    a rerun trains the rest of that epoch only, to the weights and losses of a run never stopped."""
    whole, history = train(tiny_data, tmp_path / "whole", cache=True)
    save, epoch, steps = train_module.save_state, train_module.train_epoch, []

    def stop_at_epoch_2_step_3(path, run, history, underway):
        save(path, run, history, underway)
        if (len(history), len(underway.losses)) == (1, 3):
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_state", stop_at_epoch_2_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, tmp_path / "resumed", cache=True, checkpoint_minutes=1e-8)
    monkeypatch.setattr(train_module, "train_epoch", lambda *a, **kw: steps.append(kw["start"]) or epoch(*a, **kw))
    resumed, resumed_history = train(tiny_data, tmp_path / "resumed", cache=True)
    assert steps == [3]  # epoch 2 from its fourth step, nothing before it again
    assert same_weights(whole, resumed)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]


def test_a_job_reads_back_from_its_file_as_it_was(tmp_path):
    """The file each rank of a data-parallel job loads: its settings, recipe, loss and teacher typed again."""
    name, kwargs = parse_spec(TINY_VIT)
    settings = train_settings(epochs=2, batch_size=16, image_size=32, recipe=Recipe((2, 9), 0.8, 1.0))
    job = TrainJob(TrainSetup(model=name, kwargs=kwargs, settings=settings, distill=DISTILL, init="pretrained"),
                   store="store.zarr", workdir="run", weights="run/weights.safetensors", memory_budget=0,
                   teacher=OnlineTeacher(TEACHER, {}, "teacher.safetensors"))
    assert TrainJob.load(job.save(tmp_path / "job.json")) == job
    plain = TrainJob(TrainSetup(model=name, kwargs=kwargs, settings=SETTINGS), store="store.zarr", workdir="run",
                     weights="run/weights.safetensors", memory_budget=0, cache="cache.zarr")
    assert TrainJob.load(plain.save(tmp_path / "plain.json")) == plain


def test_an_epoch_under_way_notes_its_batches_and_time_left():
    notes = []
    assert list(noted(iter(range(5)), notes.append, 5, every=0)) == list(range(5))  # batches unchanged
    assert [note.split(",")[0] for note in notes] == [f"batches {i}/5" for i in range(1, 5)]  # not the last
    assert all(", ETA " in note for note in notes)
    assert list(noted(iter(range(5)), notes.clear, 5, every=3600)) == list(range(5)) and len(notes) == 4
    resumed = []
    assert list(noted(iter(range(2)), resumed.append, 5, every=0, start=3)) == [0, 1]  # a resumed epoch's last two
    assert [note.split(",")[0] for note in resumed] == ["batches 4/5"]


def test_step_losses_are_kept_in_blocks_not_a_tensor_a_step():
    """A tensor held a step for the epoch fragmented the CPU's heap (docs/results.md)."""
    losses, steps = StepLosses(block=4), [torch.tensor(float(v), requires_grad=True) * 2 for v in range(10)]
    for loss in steps:
        losses.add(loss)
    assert len(losses) == 10 and len(losses.blocks) == 3
    assert losses.values() == [2.0 * v for v in range(10)] and StepLosses().values() == []
