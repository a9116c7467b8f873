"""Every default is written once, in luigi.cfg: the code holds none that could disagree, the
shipped file sets every key and no other, and the docs' listing is made from both."""
import configparser
import dataclasses

import luigi
import pytest
from luigi.configuration import get_config
from support.config import SHIPPED

from pipeline.training.settings import TrainSettings
from pipeline.views.records import Recipe
from tasks.check import ConfigError, check_config
from tasks.config import SECTIONS, train
from tasks.settings_doc import DOC, with_listing

KEYS = [(section.__name__, key, param) for section in SECTIONS for key, param in section.get_params()]


def shipped() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SHIPPED)
    return parser


@pytest.fixture
def no_config():
    """Luigi's configuration emptied, so only the code's own defaults remain."""
    config = get_config()
    saved = {name: dict(config.items(name, raw=True)) for name in config.sections()}
    for section in config.sections():
        config.remove_section(section)
    yield
    for section in config.sections():
        config.remove_section(section)
    config.read_dict(saved)


def test_the_code_holds_no_default(no_config):
    # Luigi gives every BoolParameter an implicit False; luigi.cfg sets each one anyway (below).
    with_default = [f"[{name}] {key}" for name, key, param in KEYS
                    if not isinstance(param, luigi.BoolParameter) and param.has_task_value(name, key)]
    assert with_default == []
    assert [f.name for f in dataclasses.fields(TrainSettings) if f.default is not dataclasses.MISSING] == []


def test_luigi_cfg_sets_every_key_and_no_other():
    cfg = shipped()
    missing = [f"[{name}] {key}" for name, key, _ in KEYS if not cfg.has_option(name, key)]
    known = {(name, key) for name, key, _ in KEYS}
    unknown = [f"[{name}] {key}" for name in {section.__name__ for section in SECTIONS} for key in cfg.options(name)
               if (name, key) not in known]
    assert missing == [] and unknown == []
    for name, key, param in KEYS:  # each default parses as its parameter's type
        param.parse(cfg.get(name, key))


def test_train_settings_are_the_train_section():
    keys = {key for key, _ in train.get_params()}
    assert {f.name for f in dataclasses.fields(TrainSettings)} - {"recipe"} <= keys
    assert {f.name for f in dataclasses.fields(Recipe)} <= keys  # the recipe's, written as [train] keys


def test_a_missing_key_is_named_before_any_work(luigi_config):
    get_config().remove_option("train", "epochs")
    with pytest.raises(ConfigError, match=r"\[train\] epochs = \(missing\)"):
        check_config()


def test_run_elsewhere_with_an_override_file_is_one_problem_not_one_per_key(no_config, tmp_path, monkeypatch):
    get_config().read_dict({"data": {"store_size": "32"}})  # what a LUIGI_CONFIG_PATH file alone gives
    monkeypatch.chdir(tmp_path)  # no luigi.cfg here
    with pytest.raises(ConfigError, match=r"1 problem\(s\).*\n.*luigi.cfg = not found.*only overrides some"):
        check_config()


def test_docs_listing_is_current():
    text = DOC.read_text()
    assert with_listing(text) == text, "docs/configuration.md is stale: run `python -m tasks.settings_doc`"


def test_no_luigi_cfg_is_one_problem_not_one_per_key(no_config):
    with pytest.raises(ConfigError, match=r"1 problem\(s\).*\n.*luigi.cfg = not found.*run from the checkout"):
        check_config()
