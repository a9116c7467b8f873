"""The tiny experiment (small images, tiny models, two epochs) laid over the shipped
luigi.cfg, the home of every default."""
from __future__ import annotations

import configparser

from support import REPO
from tasks.config import SECTIONS

SHIPPED = REPO / "luigi.cfg"
WHOLE = ("datasets", "students")  # the tiny experiment's own lists replace these sections whole

TEACHER = "convnext_atto"
TINY_VIT = "vit_tiny_patch16_224 img_size=32 patch_size=8 embed_dim=32 depth=1 num_heads=2"
TINY_CONVIT = "convit_tiny img_size=32 patch_size=8 embed_dim=16 depth=1 num_heads=2 local_up_to_layer=1"


def shipped_settings() -> dict[str, dict[str, str]]:
    """The shipped luigi.cfg as section -> key -> value."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SHIPPED)
    return {section: dict(parser[section]) for section in parser.sections()}


def tiny_settings(work: str) -> dict:
    """The defaults of the shipped luigi.cfg (its sections of settings, not Luigi's own
    [core], [retcode] or [resources]) with the tiny experiment's values in their place."""
    shipped = shipped_settings()
    settings = {section.__name__: shipped[section.__name__] for section in SECTIONS}
    for section, values in _tiny(work).items():
        settings[section] = values if section in WHOLE else {**settings.get(section, {}), **values}
    return settings


def _tiny(work: str) -> dict:
    return {
        # Luigi's own lock refuses a command line already running on this host: the tests'
        # runs must not collide with a user's `luigi --module tasks RunAll` (or each other's).
        "core": {"local_scheduler": "true", "log_level": "WARNING", "lock_pid_dir": f"{work}-luigi-pids"},
        "paths": {"work": work},
        "datasets": {"demo": "synthetic seed=0 train_per_class=12 test_per_class=6 size=32"},
        "data": {"store_size": "32", "val_fraction": "0.1", "seed": "0"},
        "compute": {"scheduler": "synchronous", "workers": "1", "threads": "2", "shard_rows": "32"},
        "teacher": {"model": TEACHER, "init": "scratch", "checkpoint": "", "epochs": "2",
                    "lr": "0.002", "views": "2", "seed": "0"},
        "students": {"vit": TINY_VIT},
        "train": {"epochs": "2", "batch_size": "16", "image_size": "32", "seed": "0", "lr": "0.001"},
        "kd": {"alpha": "0.7", "temperature": "4"},
        "cache_study": {"caches": "", "students": "vit"},  # off until a test lists caches
    }
