"""Every key of every section is checked before any work: a number below its declared range,
a bool or choice that is none, a string not of its form is named by the configuration check
with its section and key. A key added without a check fails here, unless FREE lists it with
the reason any value serves."""
from __future__ import annotations

import luigi
import pytest
from luigi.configuration import get_config

from tasks.check import config_problems
from tasks.config import SECTIONS

KEYS = [(section.__name__, key, param) for section in SECTIONS for key, param in section.get_params()]

FREE = {  # (section, key) -> why any string serves
    ("compute", "gpu_lock_dir"): "any folder: created when first used",
    ("slurm", "queue"): "a partition: SLURM knows which exist, the machine checking may not",
    ("slurm", "account"): "an account: SLURM's, likewise",
    ("slurm", "prologue"): "any shell lines",
    ("slurm", "interface"): "a network interface of the jobs' nodes, not of the machine checking",
    ("slurm", "log_directory"): "any folder: the jobs create it, on their nodes",
}

MALFORMED = {  # (section, key) of a string with a form -> a value not of it
    ("paths", "work"): "/dev/null/work",
    ("compute", "scheduler"): "thread",
    ("compute", "device"): "gpu",
    ("compute", "gpus"): "0,1",
    ("slurm", "memory"): "lots",
    ("slurm", "walltime"): "1 hour",
    ("slurm", "extra_directives"): "#SBATCH --qos=normal",
    ("teacher", "model"): "convnext_atoo",
    ("teacher", "init"): "/no/such.safetensors",
    ("teacher", "checkpoint"): "/no/such.safetensors",
    ("teacher", "stages"): "one",
    ("teacher", "randaugment"): "2",
    ("train", "randaugment"): "2",
    ("train", "modes"): "fast",
    ("train", "rdzv_endpoint"): "node001",
    ("cache_study", "caches"): "views=x",
    ("cache_study", "students"): "nobody",
}


def bad_value(section: str, key: str, param: luigi.Parameter) -> str | None:
    """A value the check must refuse; None for a key that has no check."""
    if isinstance(param, luigi.BoolParameter):
        return "maybe"
    if isinstance(param, luigi.ChoiceParameter):
        return "bogus"
    if isinstance(param, (luigi.IntParameter, luigi.FloatParameter)):
        return f"{param.range.low - 1:g}" if hasattr(param, "range") else None  # below its range
    return MALFORMED.get((section, key))


def test_every_key_has_a_check_but_those_any_value_serves():
    assert sorted((section, key) for section, key, param in KEYS if bad_value(section, key, param) is None) \
        == sorted(FREE)


def test_any_value_serves_the_free_keys(luigi_config):
    for section, key in FREE:
        luigi_config(section, key, "any text")
    assert config_problems() == []


def test_a_bad_value_of_each_key_is_named_with_its_section_and_key(luigi_config):
    missed = []
    for section, key, param in KEYS:
        if (value := bad_value(section, key, param)) is None:
            continue
        shipped = get_config().get(section, key)
        luigi_config(section, key, value)
        if not any((p.section, p.key) == (section, key) for p in config_problems()):
            missed.append(f"[{section}] {key} = {value}")
        luigi_config(section, key, shipped)
    assert missed == []


@pytest.mark.parametrize("section, key, value, fix", [
    ("train", "order_window", "0", "must be >= 1"),
    ("compute", "read_processes", "-1", "must be >= 0"),
    ("slurm", "walltime", "1 hour", "HH:MM:SS"),
    ("compute", "gpus", "0,1", "cuda:N"),
    ("train", "rdzv_endpoint", "node001", "host:port"),
])
def test_what_failed_after_hours_of_work_is_named_with_its_fix(luigi_config, section, key, value, fix):
    luigi_config(section, key, value)
    [problem] = config_problems()
    assert (problem.section, problem.key, str(problem.value)) == (section, key, value) and fix in problem.fix
