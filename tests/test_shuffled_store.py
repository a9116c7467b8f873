"""What a store's row order must be is what it gets: a recipe that mixes (a partner is another
image of the store shard) and the shards order (a batch is a few shards' images) each get a
store in a seeded random order, with no second key to set; a store in the source's order and
one shuffled as asked keep their fingerprints. [train] order = auto is the shards order for a
store above the memory budget, the random order below, fingerprints included."""
from __future__ import annotations

import pytest
from support.build import build

from pipeline.data.imagestore import ImageStore
from tasks import PrepareDataset, TrainStudent
from tasks.check import config_problems
from tasks.data import train_order


@pytest.mark.parametrize("section, key, value", [
    ("train", "mixup", "0.8"), ("teacher", "cutmix", "1.0"), ("train", "order", "shards")])
def test_a_mixing_recipe_or_the_shards_order_gets_a_shuffled_store(luigi_config, section, key, value):
    in_order = PrepareDataset("demo").fingerprint()
    luigi_config("data", "shuffle_rows", "true")
    shuffled = PrepareDataset("demo").fingerprint()
    luigi_config("data", "shuffle_rows", "false")
    luigi_config(section, key, value)
    assert config_problems() == []  # no longer refused until [data] shuffle_rows = true
    assert PrepareDataset("demo").fingerprint() == shuffled != in_order


def test_the_store_of_a_mixing_recipe_is_written_in_a_seeded_random_order(luigi_config):
    luigi_config("train", "mixup", "0.8")
    assert build(PrepareDataset("demo"))[0]
    source_order = [item.id for item in PrepareDataset("demo").source.items()]
    rows = list(ImageStore(PrepareDataset("demo").store_path()).ids)
    assert sorted(rows) == sorted(source_order) and rows != source_order


def test_order_auto_resolves_by_the_store_s_size_before_it_is_written(luigi_config):
    """Either way, the store's and a student's fingerprints are those of the order it resolves to."""
    def fingerprints() -> list[str]:
        return [task.fingerprint() for task in (PrepareDataset("demo"), TrainStudent("demo", "vit", "kd"))]

    expected = {}
    for order in ("random", "shards"):
        luigi_config("train", "order", order)
        expected[order] = fingerprints()
    luigi_config("train", "order", "auto")
    assert train_order("demo") == "random" and fingerprints() == expected["random"]  # 2 GB: the store fits
    luigi_config("compute", "memory_budget_gb", "0")
    assert train_order("demo") == "shards" and fingerprints() == expected["shards"]
