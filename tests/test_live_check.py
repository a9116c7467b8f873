"""A cache against the live teacher (VerifyData --teacher-sample): a sample of its views
rendered again and run through the teacher agrees within each encoding's bound, and a cache
made by another teacher fails, naming the view."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from support.build import build
from support.config import TEACHER
from support.slow_runs import encoding

import models
from cache.reader import TeacherCache
from pipeline.data.imagestore import ImageStore
from pipeline.teacher.live_check import check_cache
from pipeline.teacher.teacher_pass import cache_teacher
from tasks.teacher import CacheTeacher, teacher_weights
from tasks.verify import TeacherCheckFailed, VerifyData


def teacher(tiny_data, seed: int | None = None):
    net = models.create(TEACHER, len(ImageStore(tiny_data["store"]).classes))
    if seed is None:
        return models.load_weights(net, tiny_data["weights"])
    torch.manual_seed(seed)
    return models.create(TEACHER, len(ImageStore(tiny_data["store"]).classes))


@pytest.fixture(scope="module", params=["", "topk=3 feature_dtype=int8", "topk=5 feature_dtype=int4",
                                        "topk=3 tail=tempered feature_dtype=int8", "logit_dtype=int8",
                                        "logit_dtype=int4 feature_dtype=int8",
                                        "topk=2 tail=sampled samples=8 feature_dtype=int8",
                                        "logit_dtype=head feature_dtype=int4",
                                        "logit_rank=6 logit_lead=2 logit_dtype=int8 feature_dtype=int8"],
                ids=["full", "top3-int8", "top5-int4", "top3-tempered", "int8-logits", "int4-logits", "sampled",
                     "head-int4", "rank6-int8"])
def encoded(tiny_data, tmp_path_factory, request):
    """The tiny cache made again in another encoding (its logits and features)."""
    if not request.param:
        return tiny_data["cache"]
    out = tmp_path_factory.mktemp("encoded") / "cache.zarr"
    job = dataclasses.replace(tiny_data["job"], out=str(out), **encoding(request.param))
    store = ImageStore(tiny_data["store"])
    cache_teacher(job, store.rows("train"), len(store.labels), teacher(tiny_data).num_features,
                  {"identity": tiny_data["identity"]}, "synchronous", 1, 16)
    return out


def test_a_cache_agrees_with_its_teacher_within_its_encoding_s_bound(tiny_data, encoded):
    found = check_cache(TeacherCache(encoded), ImageStore(tiny_data["store"]), teacher(tiny_data), 16)
    assert [f.what for f in found] == ["log-probabilities", "features"]
    assert all(f.within and 0 <= f.largest <= f.bound for f in found), found


def test_a_cache_of_another_teacher_is_beyond_its_bound(tiny_data, encoded):
    found = check_cache(TeacherCache(encoded), ImageStore(tiny_data["store"]), teacher(tiny_data, seed=7), 16)
    assert not any(f.within for f in found)
    assert all(f.largest > f.bound and "view" in f.view for f in found)


@pytest.mark.slow
def test_verify_data_checks_the_caches_against_the_teacher_and_fails_on_another(luigi_config):
    assert build(CacheTeacher("demo"))[0]
    assert build(VerifyData("demo", teacher_sample=8))[0]
    weights = teacher_weights("demo").output().path
    torch.manual_seed(7)
    models.save_weights(models.create(TEACHER, len(ImageStore(CacheTeacher("demo").requires()["store"]
                                                             .store_path()).classes)), weights)
    with pytest.raises(TeacherCheckFailed, match=r"log-probabilities: largest difference .* at .*view"):
        VerifyData("demo", teacher_sample=8).run()
