"""ShowConfig: every setting with its value and its origin, the last of luigi.cfg, a file
read after it (LUIGI_CONFIG_PATH's) and the command line that sets it."""
from __future__ import annotations

import re
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.configuration import get_config
from luigi.configuration.cfg_parser import LuigiConfigParser
from support.config import SHIPPED

from tasks.config import SECTIONS
from tasks.show import settings_table

REPO = Path(__file__).resolve().parents[1]
MINE = "[train]\nlr = 0.01\n[datasets]\ndemo =\nmine = synthetic seed=1\n"  # a file read after luigi.cfg
ROW = re.compile(r"  (\S+) += (.*?) +\(([^()]*)\)")


def table(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    """ShowConfig's output as (section, key) -> (value, origin)."""
    rows, section = {}, None
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header[1]
        elif row := re.fullmatch(ROW, line):
            rows[section, row[1]] = row[2], row[3]
    return rows


def every_key(*files: Path) -> set[tuple[str, str]]:
    """Every key the Config classes declare, and every name of [datasets] and [students]
    in `files` read in order."""
    config = ConfigParser(interpolation=None)
    config.read(files)
    declared = {(s.__name__, key) for s in SECTIONS for key, _ in s.get_params()}
    return declared | {(name, key) for name in ("datasets", "students") for key in config.options(name)}


@pytest.fixture
def mine(tmp_path, monkeypatch):
    """Luigi's configuration read from luigi.cfg and then a file of one's own, as
    LUIGI_CONFIG_PATH makes it; the file's path."""
    path = tmp_path / "mine.cfg"
    path.write_text(MINE)
    monkeypatch.setattr(LuigiConfigParser, "_config_paths", [str(SHIPPED), str(path)])
    _reread()
    yield path
    monkeypatch.undo()
    _reread()


def _reread() -> None:
    config = get_config()
    for section in config.sections():
        config.remove_section(section)
    config.reload()


def test_each_value_names_the_last_file_that_sets_it(mine):
    rows = table(settings_table())
    assert rows["train", "lr"] == ("0.01", str(mine))
    assert rows["train", "epochs"] == ("4", "luigi.cfg")
    assert rows["datasets", "mine"] == ("synthetic seed=1", str(mine))
    assert rows["datasets", "demo"] == ("(empty)", str(mine))  # dropped by the later file
    assert rows["students", "vit"][1] == "luigi.cfg"


def test_a_command_line_value_overrides_the_files(mine):
    with CmdlineParser.global_instance(["ShowConfig", "--train-epochs", "3", "--train-lr", "0.5", "--kd-hard"]):
        rows = table(settings_table())
    assert rows["train", "epochs"] == ("3", "command line")
    assert rows["train", "lr"] == ("0.5", "command line")
    assert rows["kd", "hard"] == ("true", "command line")
    assert rows["kd", "alpha"] == ("0.7", "luigi.cfg")


def test_every_key_of_every_section_is_listed(mine):
    text = settings_table()
    assert set(table(text)) == every_key(SHIPPED, mine)
    assert text.startswith(f"Read in order, each overriding the ones before: luigi.cfg, {mine}, the command line")


def test_a_value_no_file_holds_is_told_apart(luigi_config):
    luigi_config("train", "epochs", "7")  # as code or a test changes Luigi's configuration
    get_config().remove_option("train", "lr")
    rows = table(settings_table())
    assert rows["train", "epochs"] == ("7", "set in code")
    assert rows["train", "lr"] == ("(missing)", "not set")


@pytest.mark.slow
def test_command_prints_every_setting_with_its_origin(tmp_path):
    path = tmp_path / "mine.cfg"
    path.write_text(MINE)
    proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "ShowConfig", "--train-epochs", "3"],
                          cwd=REPO, env={"LUIGI_CONFIG_PATH": str(path), "PATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = table(proc.stdout)
    assert rows["train", "epochs"] == ("3", "command line")
    assert rows["train", "lr"] == ("0.01", str(path))
    assert rows["train", "batch_size"] == ("64", "luigi.cfg")
    assert rows["datasets", "demo"] == ("(empty)", str(path))
    assert set(rows) == every_key(SHIPPED, path)
