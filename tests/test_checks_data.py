"""The configuration check on the files the settings name: data sets that would train for
nothing or report misleadingly, and teacher weights that do not fit the teacher. Each bad
input is made here, and each is named by its setting before any task runs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.build import build
from support.config import TEACHER, TINY_VIT
from support.hdf5 import write_h5

import models
from tasks import RunAll
from tasks.check import config_problems

CLASSES = 8  # of the tiny experiment's synthetic data set


def only_problem(section: str, key: str):
    """The one problem of the configuration, which must be of [section] key; never relays
    torch's advice to load a file whole."""
    [problem] = config_problems()
    assert (problem.section, problem.key) == (section, key)
    assert "weights_only" not in str(problem)
    return problem


def images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for n in range(count):
        Image.new("RGB", (8, 8), (n, 0, 0)).save(folder / f"{n}.png")


# --- data sets --------------------------------------------------------------------------------

def test_a_source_without_test_images_is_refused(luigi_config, tmp_path):
    # No test images: the students would train, then every evaluation fail.
    luigi_config("datasets", "demo", f"hdf5:{write_h5(tmp_path / 'd.h5', n=9)} holdout=0")
    problem = only_problem("datasets", "demo")
    assert problem.fix.startswith("no test images (9 train, 0 val, 0 test); ") and "`holdout=`" in problem.fix


def test_labels_beyond_the_classes_make_empty_classes_named(luigi_config, tmp_path):
    # Labels 0, 1, 2 and 9, no class_names: class_3 to class_8 exist and hold nothing.
    path = write_h5(tmp_path / "d.h5", n=8, labels=np.array([0, 1, 2, 9] * 2), split=np.array([0] * 4 + [2] * 4))
    luigi_config("datasets", "demo", f"hdf5:{path}")
    problem = only_problem("datasets", "demo")
    assert "6 of 10 classes have no image at all: class_3, class_4, class_5, class_6, class_7 and 1 more" in problem.fix


def test_a_class_of_one_image_has_no_test_image(luigi_config, tmp_path):
    # A 25% holdout of one image is none: the class would be trained on, never reported.
    images(tmp_path / "images" / "many", 8)
    images(tmp_path / "images" / "single", 1)
    luigi_config("datasets", "demo", f"imagefolder:{tmp_path / 'images'}")
    problem = only_problem("datasets", "demo")
    assert "1 of 2 classes have no test image: single; " in problem.fix


def test_a_class_folder_without_images_is_named(luigi_config, tmp_path):
    images(tmp_path / "images" / "train" / "cat", 2)
    images(tmp_path / "images" / "test" / "cat", 2)
    (tmp_path / "images" / "train" / "dog").mkdir()
    images(tmp_path / "images" / "test" / "dog", 2)
    luigi_config("datasets", "demo", f"imagefolder:{tmp_path / 'images'}")
    problem = only_problem("datasets", "demo")
    assert f"{tmp_path / 'images' / 'train' / 'dog'}: class folder holds no images" in problem.fix
    ok, ran = build(RunAll())
    assert not ok and ran == [] and not luigi_config.work.exists()


# --- teacher weights --------------------------------------------------------------------------

def teacher_weights(path: Path, classes: int) -> Path:
    models.save_weights(models.create(TEACHER, classes), path)
    return path


def other_model(path: Path) -> Path:
    name, *kwargs = TINY_VIT.split()
    models.save_weights(models.create(name, CLASSES, **{k: int(v) for k, v in (kw.split("=") for kw in kwargs)}), path)
    return path


BAD_WEIGHTS = {  # file maker -> words of the reason
    "random.pth": (lambda path: path.write_bytes(os.urandom(4096)), "not a weights file"),
    "fake.safetensors": (lambda path: path.write_bytes(b"{not a header}" * 10), "not a safetensors file"),
    "vit.safetensors": (other_model, f"not {TEACHER} weights"),
}


@pytest.mark.parametrize("key", ["checkpoint", "init"])
@pytest.mark.parametrize("name", BAD_WEIGHTS)
def test_weights_that_do_not_fit_the_teacher_are_named_by_setting(luigi_config, tmp_path, key, name):
    make, reason = BAD_WEIGHTS[name]
    make(tmp_path / name)
    luigi_config("teacher", key, str(tmp_path / name))
    problem = only_problem("teacher", key)
    assert problem.fix.startswith(reason)
    ok, ran = build(RunAll())
    assert not ok and ran == [] and not luigi_config.work.exists()


def test_a_finished_teacher_must_have_the_data_set_s_classes_a_starting_point_need_not(luigi_config, tmp_path):
    path = teacher_weights(tmp_path / "three.safetensors", 3)
    luigi_config("teacher", "checkpoint", str(path))
    problem = only_problem("teacher", "checkpoint")
    assert f"for {CLASSES} classes: head.fc.weight is (3, 320), not ({CLASSES}, 320)" in problem.fix
    assert f"data set demo ({CLASSES} classes)" in problem.fix
    luigi_config("teacher", "checkpoint", "")
    luigi_config("teacher", "init", str(path))  # fine-tuning resets the classifier, as timm does
    assert config_problems() == []


def test_a_finished_teacher_that_fits_passes(luigi_config, tmp_path):
    luigi_config("teacher", "checkpoint", str(teacher_weights(tmp_path / "teacher.safetensors", CLASSES)))
    assert config_problems() == []
