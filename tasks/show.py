"""`luigi --module tasks ShowConfig`: every setting of the experiment with its value and
where that value comes from (luigi.cfg, another config file Luigi read, or the command
line), one aligned table per section. What each setting means: docs/configuration.md."""
from __future__ import annotations

import os
from configparser import ConfigParser
from pathlib import Path

import luigi
from luigi.configuration import get_config
from luigi.configuration.cfg_parser import LuigiConfigParser

from tasks.config import SECTIONS, command_line_value
from tasks.settings_doc import SHIPPED, read_cfg

FREE_FORM = ("datasets", "students")  # sections of names, which no Config class declares
COMMAND_LINE, NOWHERE, IN_CODE = "command line", "not set", "set in code"
ConfigFile = tuple[str, ConfigParser]  # a label for the file, and its contents
Row = tuple[str, str, str]  # key, value, origin


def settings_table() -> str:
    """The config files read, then every key of every section with its value and origin."""
    files = _config_files()
    sections = [(s.__name__, [key for key, _ in s.get_params()]) for s in SECTIONS]
    sections += [(name, _options(name)) for name in FREE_FORM]
    head = (f"Read in order, each overriding the ones before: {', '.join(label for label, _ in files)}, "
            "the command line (--<section>-<key>).\nWhat each setting means: docs/configuration.md.")
    return "\n\n".join([head, *(_block(name, [_row(name, key, files) for key in keys]) for name, keys in sections)])


def _config_files() -> list[ConfigFile]:
    """Each config file Luigi read, in its order of reading."""
    return [(_label(path), read_cfg(path)) for path in _luigi_config_paths() if Path(path).is_file()]


def _luigi_config_paths() -> list[str]:
    """The config files Luigi reads, in order (its defaults, LUIGI_CONFIG_PATH, add_config_path's),
    some of which may not exist. Luigi has no public list of them (get_config().reload() returns
    the files it read, but reads them again over the values set in the process), so this reads
    the private list of LuigiConfigParser, as in Luigi 3.8.1."""
    return list(LuigiConfigParser._config_paths)


def _label(path: str) -> str:
    if Path(path).resolve() == SHIPPED.resolve():
        return "luigi.cfg"
    # A relative path keeps a ./ so that a luigi.cfg in another folder is not taken for the shipped one.
    return path if os.path.isabs(path) else os.path.join(os.curdir, os.path.normpath(path))


def _options(section: str) -> list[str]:
    config = get_config()
    return config.options(section) if config.has_section(section) else []


def _row(section: str, key: str, files: list[ConfigFile]) -> Row:
    given = command_line_value(section, key)
    if given is not None:
        return key, given, COMMAND_LINE
    config = get_config()
    if not config.has_option(section, key):
        return key, "(missing)", NOWHERE
    return key, _shown(config.get(section, key)), _origin(section, key, files)


def _origin(section: str, key: str, files: list[ConfigFile]) -> str:
    """The last file that sets the key, as a later file overrides an earlier one."""
    written = get_config().get(section, key, raw=True)
    for label, contents in reversed(files):
        if contents.has_option(section, key):
            # Luigi's configuration can be changed in the process (tests do): then no file holds the value.
            return label if contents.get(section, key) == written else IN_CODE
    return IN_CODE


def _shown(value: str) -> str:
    lines = [line.strip() for line in value.splitlines() if line.strip()]  # [slurm] prologue's lines
    return "; ".join(lines) or "(empty)"


def _block(section: str, rows: list[Row]) -> str:
    if not rows:
        return f"[{section}]\n  (none)"
    keys, values = (max(len(row[i]) for row in rows) for i in (0, 1))
    return "\n".join([f"[{section}]", *(f"  {key:<{keys}} = {value:<{values}}  ({origin})"
                                         for key, value, origin in rows)])


class ShowConfig(luigi.Task):
    """Print every setting, its value and where it comes from; do nothing else."""

    ran = False

    def complete(self) -> bool:
        # No configuration check first (unlike CheckConfig): the table helps most when a value is wrong.
        return self.ran  # False at first, so run() prints

    def run(self) -> None:
        self.ran = True
        print(settings_table())
