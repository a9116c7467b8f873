"""Run logs TensorBoard reads: a run's epochs as scalars, read back with TensorBoard's own
reader, and a report's test metrics as hyperparameter runs; `none` writes nothing."""
from __future__ import annotations

import pytest
from support.config import TINY_VIT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.runtime.tensorboard import EVENTS, epoch_log, write_hparams
from pipeline.spec import parse_spec
from pipeline.training.build import TrainSetup, build_run
from pipeline.training.train import fit, schedule
from tasks.config import train_settings


def events(folder) -> EventAccumulator:
    reader = EventAccumulator(str(folder))
    reader.Reload()
    return reader


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
def test_a_run_logs_each_epoch_where_asked(tiny_data, tmp_path, logger):
    name, kwargs = parse_spec(TINY_VIT)
    setup = TrainSetup(model=name, kwargs=kwargs, settings=train_settings(epochs=2, batch_size=16, image_size=32),
                       logger=logger)
    run = build_run(setup, ImageStore(tiny_data["store"]), TeacherCache(tiny_data["cache"]))
    history = fit(run, tmp_path)
    if logger == "none":
        assert not (tmp_path / EVENTS).exists()
        return
    found = events(tmp_path / EVENTS)
    assert set(found.Tags()["scalars"]) == {"train/loss", "train/lr", "train/images_per_s", "val/top1"}
    assert [(e.step, round(e.value, 5)) for e in found.Scalars("train/loss")] == [
        (h["epoch"], round(h["loss"], 5)) for h in history]
    assert [round(e.value, 5) for e in found.Scalars("val/top1")] == [round(h["val_top1"], 5) for h in history]
    last_steps = [schedule(run, epoch)(len(run.loader) - 1) for epoch in range(2)]  # each epoch's last lr
    assert [e.value for e in found.Scalars("train/lr")] == pytest.approx(last_steps)
    assert all(e.value > 0 for e in found.Scalars("train/images_per_s"))


def test_a_report_s_runs_are_hyperparameter_runs(tmp_path):
    write_hparams(tmp_path, {"vit-kd": ({"student": "vit", "mode": "kd"}, {"top1": 0.5, "mAP": 0.25}),
                             "vit-baseline": ({"student": "vit", "mode": "baseline"}, {"top1": 0.4, "mAP": 0.2})})
    for run, top1 in (("vit-kd", 0.5), ("vit-baseline", 0.4)):
        found = events(tmp_path / EVENTS / run)
        assert found.Scalars("test/top1")[0].value == pytest.approx(top1)
        assert "_hparams_/session_start_info" in found.PluginTagToContent("hparams")


def test_an_unknown_logger_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tensorboard, none"):
        epoch_log("wandb", tmp_path)
