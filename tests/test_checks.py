"""The configuration check: each kind of mistake is named with its section, key, value and
fix; all are reported together; the command exits non-zero before any task runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from luigi.cmdline_parser import CmdlineParser
from luigi.configuration import get_config
from support.build import build
from support.config import SHIPPED, TEACHER, TINY_VIT

import models
import tasks.check
from tasks import CheckConfig, RunAll
from tasks.check import config_problems
from tasks.config import students

REPO = Path(__file__).resolve().parents[1]

# (section, key, value, words the fix must contain); {tmp} is the test's folder
MISTAKES = [
    ("datasets", "gone", "stanford40:{tmp}/nowhere", "existing path"),
    ("datasets", "odd", "synthetic colour=red", "unknown option(s) colour"),
    ("datasets", "kind", "webdataset:{tmp}", "unknown source"),
    ("students", "typo", "vitt_tiny_patch16_224", "did you mean vit_tiny_patch16_224"),
    ("students", "kwarg", TINY_VIT + " embed_dimm=8", "embed_dimm"),
    ("students", "size", TINY_VIT.replace("img_size=32", "img_size=48"), "48"),
    ("train", "modes", "kd,fast", "list one or more of baseline, kd, online"),
    ("cache_study", "caches", "views=x", "not a whole number"),
    ("cache_study", "caches", "views=0; colour=red",
     "a key of views, topk, tail, samples, logit_dtype, logit_rank, logit_lead, feature_dtype"),
    ("cache_study", "caches", "topk=41", "at most that many"),
    ("cache_study", "caches", "feature_dtype=int2", "use one of auto, float16, int8, int4, none"),
    ("cache_study", "caches", "tail=round", "use one of flat, tempered, sampled"),
    ("cache_study", "caches", "logit_dtype=int2", "use one of auto, float16, int8, int4"),
    ("cache_study", "caches", "samples=0 tail=sampled", "set samples to 1 or more"),
    ("cache_study", "caches", "tail=sampled topk=8", "leaves no tail to sample"),
    ("cache_study", "caches", "feature_dtype=none logit_dtype=head", "rebuilds the logits from the features"),
    ("teacher", "logit_rank", "-1", ">= 0"),
    ("teacher", "tail", "round", "not a valid choice"),
    ("cache_study", "students", "nobody", "not in [students]"),
    ("teacher", "topk", "-1", ">= 0"),
    ("teacher", "feature_dtype", "int2", "not a valid choice"),
    ("teacher", "model", "convnext_atoo", "unknown timm model"),
    ("teacher", "stages", "1,7", "stages 0 to 3"),
    ("teacher", "init", "{tmp}/missing.safetensors", "existing weights file"),
    ("teacher", "checkpoint", "{tmp}/missing.safetensors", "no such file"),
    ("train", "randaugment", "2", "give N,M"),
    ("teacher", "randaugment", "2,11", "M in [0, 10]"),
    ("train", "mix_prob", "1.5", "in [0, 1]"),
    ("teacher", "label_smoothing", "1", "in [0, 1)"),
    ("train", "cutmix", "-1", ">= 0"),
    ("kd", "alpha", "1.5", "in [0, 1]"),
    ("kd", "temperature", "0", "> 0"),
    ("kd", "feature_loss", "l2", "not a valid choice"),
    ("train", "epochs", "ten", "invalid literal"),
    ("train", "batch_size", "0", ">= 1"),
    ("train", "lr", "-1e-3", "> 0"),
    ("compute", "workers", "0", ">= 1"),
    ("compute", "shard_rows", "0", ">= 1"),
    ("compute", "scheduler", "thread", "threads, processes, synchronous, slurm, gpus or a cluster address"),
    ("compute", "device", "gpu", "use auto, cpu, cuda, cuda:N or mps"),
    ("compute", "precision", "fp8", "not a valid choice"),
]


def test_a_cache_without_features_is_refused_where_features_are_distilled(luigi_config):
    luigi_config("teacher", "feature_dtype", "none")
    assert config_problems() == []  # beta = 0: logits only
    luigi_config("kd", "beta", "0.5")
    luigi_config("cache_study", "caches", "topk=3 feature_dtype=none")
    assert [(p.section, p.key, p.value) for p in config_problems()] == [
        ("teacher", "feature_dtype", "none"), ("cache_study", "caches", "feature_dtype=none")]
    assert "[kd] beta = 0.5 distils the teacher's features" in config_problems()[0].fix


def test_a_teacher_whose_classifier_cannot_rebuild_logits_is_refused_before_any_work(luigi_config, monkeypatch):
    def no_linear_head(net):
        raise ValueError("its classifier is not one linear layer; keep the logits (float16, int8 or int4)")

    monkeypatch.setattr(models.Net, "classifier", no_linear_head)
    luigi_config("teacher", "model", "convnext_atto drop_path_rate=0.05")  # a spec no other test built
    assert config_problems() == []  # every logit kept: any classifier does
    luigi_config("teacher", "logit_dtype", "head")
    [problem] = config_problems()
    assert (problem.section, problem.key, problem.value) == ("teacher", "logit_dtype", "head")
    assert "keep the logits" in problem.fix
    luigi_config("teacher", "logit_dtype", "auto")  # past the rank: in it, through the classifier
    luigi_config("teacher", "logit_rank", "2")
    assert [p.key for p in config_problems()] == ["logit_dtype"]


def test_a_recipe_needs_random_views(luigi_config):
    luigi_config("train", "mixup", "0.8")
    luigi_config("teacher", "cutmix", "1.0")
    assert config_problems() == []  # mixing gets a shuffled store (tests/test_shuffled_store.py)
    luigi_config("train", "augment", "false")
    assert [(p.section, p.key, p.value) for p in config_problems()] == [("train", "augment", False)] * 2
    assert "[train]'s recipe draws random views" in config_problems()[0].fix


def test_several_nodes_need_the_endpoint_where_their_ranks_meet(luigi_config):
    luigi_config("train", "nodes", "2")
    [problem] = config_problems()
    assert (problem.section, problem.key) == ("train", "rdzv_endpoint") and "[train] nodes = 2" in problem.fix
    luigi_config("train", "rdzv_endpoint", "node001:29500")
    assert config_problems() == []


def test_a_config_file_luigi_cannot_find_is_refused_naming_it(luigi_config, monkeypatch, tmp_path):
    missing = str(tmp_path / "no" / "such.cfg")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", missing)  # Luigi only warns, and reads luigi.cfg alone
    assert [(p.section, p.key, p.value) for p in config_problems()] == [("(files)", "LUIGI_CONFIG_PATH", missing)]
    ok, ran = build(CheckConfig())
    assert not ok and ran == []
    monkeypatch.setenv("LUIGI_CONFIG_PATH", f"{SHIPPED}{os.pathsep}{SHIPPED}")  # Luigi reads one file, not a list
    [problem] = config_problems()
    assert problem.key == "LUIGI_CONFIG_PATH" and "one path, not a list" in problem.fix
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(SHIPPED))
    assert config_problems() == []


def test_a_bad_value_given_on_the_command_line_is_shown_as_given(luigi_config):
    with CmdlineParser.global_instance(["CheckConfig", "--teacher-feature-dtype", "bogus", "--train-epochs", "ten"]):
        assert [str(p).split(": ")[0] for p in config_problems()] == [
            "[teacher] feature_dtype = bogus", "[train] epochs = ten"]


def test_chunks_must_divide_shards(luigi_config):
    luigi_config("data", "chunk_rows", "5")  # the tiny experiment's shards hold 32 rows
    assert [(p.section, p.key, p.value, p.fix) for p in config_problems()] == [
        ("data", "chunk_rows", 5, "must divide [compute] shard_rows = 32")]
    luigi_config("data", "chunk_rows", "8")
    assert config_problems() == []


def test_tiny_configuration_has_no_problems(luigi_config):
    assert config_problems() == []
    written = [p.relative_to(luigi_config.work).parent.as_posix() for p in luigi_config.work.rglob("*") if p.is_file()]
    assert written == [".checked"]  # the verdict remembered, and no trace of the probe of the folder


def test_a_passed_model_check_is_remembered_until_what_it_read_changes(luigi_config, monkeypatch, tmp_path):
    """A rerun of the same configuration builds no model (a no-op command skips seconds); a
    changed spec or teacher weights file is checked again."""
    weights = tmp_path / "init.safetensors"
    models.save_weights(models.create(TEACHER, 3), weights)
    luigi_config("teacher", "init", str(weights))
    assert config_problems() == []

    def fresh_check() -> list:
        monkeypatch.setattr(tasks.check, "_checked", {})
        return config_problems()

    def build(*args, **kwargs):
        raise ValueError("built")

    monkeypatch.setattr(models, "check_build", build)
    assert fresh_check() == []  # remembered: no model built
    luigi_config("students", "vit", TINY_VIT + " depth=2")
    assert [(p.key, p.fix) for p in fresh_check()] == [("vit", "ValueError: built")]  # a new spec is built
    monkeypatch.undo()
    luigi_config("students", "vit", TINY_VIT)
    assert fresh_check() == []
    models.save_weights(models.create(TEACHER, 3, depths=(1, 1, 1, 1)), weights)
    assert [(p.section, p.key) for p in fresh_check()] == [("teacher", "init")]  # the file changed


@pytest.mark.parametrize("section, key, value, meant", [
    ("kd", "alhpa", "0.5", "alpha"), ("train", "epoch", "3", "epochs"),
    ("teacher", "checkpiont", "/nope", "checkpoint"), ("paths", "Work", "elsewhere", "work")])
def test_a_misspelt_key_is_named_with_the_key_meant(luigi_config, section, key, value, meant):
    luigi_config(section, key, value)
    [problem] = config_problems()
    assert (problem.section, problem.key, problem.value) == (section, key, value)
    assert problem.fix == f"unknown key, so the default would be used; did you mean {meant}?"


def test_an_unknown_key_like_none_lists_the_section_s_keys(luigi_config):
    luigi_config("kd", "zzz", "1")
    [problem] = config_problems()
    assert problem.fix.endswith("[kd] has alpha, temperature, beta, feature_loss, hard")


def test_keys_with_dashes_and_default_s_keys_are_no_unknown_keys(luigi_config, tmp_path, monkeypatch):
    config = get_config()
    config.remove_option("train", "batch_size")
    luigi_config("train", "batch-size", "16")  # Luigi reads it, with a deprecation warning
    monkeypatch.setitem(config.defaults(), "root", str(tmp_path))  # [DEFAULT] root = ...: every section has it
    luigi_config("paths", "work", "%(root)s/work")
    with pytest.warns(DeprecationWarning, match="with dashes"):
        assert config_problems() == []


def test_a_work_folder_that_cannot_be_written_is_named(luigi_config, tmp_path):
    # The tests run as root, whom chmod does not stop: a folder under a regular file cannot exist.
    (tmp_path / "file").write_text("")
    luigi_config("paths", "work", str(tmp_path / "file" / "work"))
    [problem] = config_problems()
    assert (problem.section, problem.key) == ("paths", "work")
    assert problem.fix.startswith("cannot write there ([Errno 20] Not a directory")


def test_an_empty_spec_drops_a_name_declared_earlier(luigi_config):
    luigi_config("students", "swin", "")  # what `swin =` in a LUIGI_CONFIG_PATH file does
    assert config_problems() == [] and list(students()) == ["vit"]


@pytest.mark.parametrize("section, key, value, fix", MISTAKES, ids=[f"{m[0]}-{m[1]}" for m in MISTAKES])
def test_each_mistake_names_section_key_value_and_fix(luigi_config, tmp_path, section, key, value, fix):
    value = value.format(tmp=tmp_path)
    luigi_config(section, key, value)
    [problem] = config_problems()
    assert (problem.section, problem.key, str(problem.value)) == (section, key, str(type(problem.value)(value)))
    assert fix in problem.fix
    assert str(problem).startswith(f"[{section}] {key} = ")


@pytest.mark.parametrize("section, key, value", [
    ("compute", "scheduler", "slurm"), ("compute", "scheduler", "tcp://host:8786"), ("compute", "scheduler", "gpus"),
    ("teacher", "stages", "1, 2"), ("kd", "alpha", "0"), ("teacher", "views", "0"),
    ("compute", "device", "cpu"), ("compute", "precision", "bf16")])
def test_values_at_the_edge_of_their_range_pass(luigi_config, section, key, value):
    luigi_config(section, key, value)
    assert config_problems() == []


def test_a_mistake_stops_the_build_before_any_task_runs(luigi_config):
    luigi_config("students", "typo", "vitt_tiny_patch16_224")
    for task in (RunAll(), CheckConfig()):
        ok, ran = build(task)
        assert not ok and ran == []
    assert not luigi_config.work.exists()


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_on_a_machine_without_it_fails_at_once_naming_the_setting(luigi_config, device):
    luigi_config("compute", "device", device)
    [problem] = config_problems()
    assert str(problem).startswith(f"[compute] device = {device}: this machine has no CUDA GPU")
    assert "use auto or cpu" in problem.fix
    ok, ran = build(RunAll())
    assert not ok and ran == []
    assert not luigi_config.work.exists()


@pytest.mark.slow
def test_command_lists_every_problem_and_exits_nonzero_before_any_work(tmp_path):
    work = tmp_path / "work"
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(f"[paths]\nwork = {work}\n[datasets]\ngone = imagefolder:{tmp_path}/missing\n"
                   f"[students]\ntypo = vitt_tiny_patch16_224\n[kd]\nalpha = 1.5\n")
    proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "RunAll", "--train-epochs", "0",
                           "--no-lock"],  # not refused when a user runs RunAll on this host
                          cwd=REPO, env={"LUIGI_CONFIG_PATH": str(cfg), "PATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 35  # luigi.cfg's [retcode] scheduling_error
    out = proc.stdout + proc.stderr
    assert "ERROR: the configuration has 4 problem(s); no task was run" in out
    for line in (f"[datasets] gone = imagefolder:{tmp_path}/missing: ", "[students] typo = vitt_tiny_patch16_224: ",
                 "[kd] alpha = 1.5: must be in [0, 1]", "[train] epochs = 0: must be >= 1"):
        assert f"\n  {line}" in out
    assert not work.exists()
