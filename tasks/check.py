"""The configuration check, run when Luigi schedules the first task: every task's
complete() checks the whole configuration first (once per process and configuration), so a
mistake stops the command, exit code [retcode] scheduling_error, before any task runs.
`luigi --module tasks CheckConfig` runs the check alone."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import luigi
from luigi.configuration import get_config
from luigi.parameter import MissingParameterException

from pipeline.checks import Problem, Range, check, unknown_keys
from tasks.config import SECTIONS, RecipeKeys, command_line_value, datasets, keys_given, students

log = logging.getLogger("luigi-interface")
MISSING = "(missing)"
_checked: dict[str, list[Problem]] = {}  # by the values checked; files are looked at once per process


class ConfigError(ValueError):
    """The configuration has problems; the message lists them all."""


def config_problems() -> list[Problem]:
    """Every problem of the configuration as Luigi resolves it (files and command line)."""
    if files := file_problems():
        return files  # the settings read are not the user's: checking them would mislead
    settings: dict[str, dict] = {}
    problems: list[Problem] = []
    for section in SECTIONS:
        name = section.__name__
        problems += unknown_keys(name, keys_given(name, raw=True), (key for key, _ in section.get_params()))
        values = settings[name] = {}
        for key, param in section.get_params():
            try:
                values[key] = param.task_value(name, key)
            except ValueError as error:  # e.g. epochs = ten, shown as given
                given = command_line_value(name, key) or get_config().get(name, key)
                problems.append(Problem(name, key, given, str(error)))
            except MissingParameterException:  # defaults live in luigi.cfg only
                problems.append(Problem(name, key, MISSING, "every setting needs a value and luigi.cfg holds "
                                        "the defaults: restore the key in luigi.cfg"))
    if any(p.value == MISSING for p in problems):  # the checks of values need every value
        # Keys missing and no luigi.cfg here: run from elsewhere, with an override file only.
        return problems if Path("luigi.cfg").is_file() else [no_luigi_cfg()]
    for name, read in (("datasets", datasets), ("students", students)):
        try:
            settings[name] = read()
        except ValueError as error:
            problems.append(Problem(name, "(section)", "missing", str(error)))
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _checked:
        _checked[key] = check(settings, declared_ranges())
    return problems + _checked[key]


def file_problems() -> list[Problem]:
    """The config files Luigi read must be the user's: luigi.cfg, which holds every default, and
    the file LUIGI_CONFIG_PATH names, of which Luigi only warns when it is missing, running the
    default experiment in place of the user's."""
    problems = []
    path = os.environ.get("LUIGI_CONFIG_PATH")
    if path is not None and not os.path.isfile(path):
        many = "; Luigi reads it as one path, not a list" if os.pathsep in path else ""
        problems.append(Problem("(files)", "LUIGI_CONFIG_PATH", path, f"no file {Path(path).absolute()}{many}, so "
                                "Luigi would run luigi.cfg's experiment: name an existing config file, or unset it"))
    if not any(get_config().has_section(section.__name__) for section in SECTIONS):
        problems.append(no_luigi_cfg())
    return problems


def no_luigi_cfg() -> Problem:
    return Problem("(files)", "luigi.cfg", "not found", f"Luigi read no luigi.cfg in {Path.cwd()}, and it holds "
                   "every default (a LUIGI_CONFIG_PATH file only overrides some): run from the checkout, "
                   "where luigi.cfg is")


def declared_ranges() -> dict[str, dict[str, Range]]:
    """section -> key -> Range, as the Config classes declare them (tasks.config.ranged); a
    section's own keys first, then the recipe keys it shares, the order its problems are listed in."""
    ranges = {}
    for section in SECTIONS:
        params = sorted(section.get_params(), key=lambda item: item[0] in vars(RecipeKeys))  # stable
        ranges[section.__name__] = {key: param.range for key, param in params if hasattr(param, "range")}
    return ranges


def check_config() -> None:
    """Raise ConfigError listing every problem, after logging the list where Luigi logs."""
    problems = config_problems()
    if problems:
        message = "\n  ".join([f"the configuration has {len(problems)} problem(s); no task was run. "
                               "Fix each, then rerun (`luigi --module tasks CheckConfig` checks alone):",
                               *map(str, problems)])
        log.error(message)
        raise ConfigError(message)


class ConfigCheckedTask:
    """Mixin for Luigi tasks (before luigi.Task among the bases): complete() checks the whole
    configuration first, so a mistake stops the command before any task runs."""

    def complete(self) -> bool:
        check_config()
        return super().complete()


class CheckConfig(luigi.Task):
    """Check the whole configuration and do nothing else."""

    ran = False

    def complete(self) -> bool:
        check_config()
        return self.ran  # False at first, so run() says the check passed

    def run(self) -> None:
        self.ran = True
        log.info("configuration checked: %d data set(s), %d student(s) and the teacher; no problems",
                 len(datasets()), len(students()))
