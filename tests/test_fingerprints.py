"""A setting that changes nothing of a run stays out of its fingerprint: a kd student
without a feature term ([kd] beta = 0) never reads the cache's features, so changing how
they are stored does not retrain it; with a feature term it does."""
from __future__ import annotations

from tasks import CacheTeacher, EvaluateStudent, TrainStudent
from tasks.config import teacher


def fingerprints() -> tuple[str, str, str]:
    return (CacheTeacher("demo").fingerprint(), TrainStudent("demo", "vit", "kd").fingerprint(),
            EvaluateStudent("demo", "vit", "kd").fingerprint())


def test_unread_cache_settings_leave_a_kd_students_fingerprint_alone(luigi_config):
    cache, student, evaluation = fingerprints()
    luigi_config("teacher", "feature_dtype", "int8")
    luigi_config("teacher", "stages", "1")
    luigi_config("kd", "feature_loss", "cosine")
    assert fingerprints() == (fingerprints()[0], student, evaluation)
    assert fingerprints()[0] != cache  # the cache itself is another one
    luigi_config("teacher", "topk", "3")  # the logits it reads: retrained
    assert fingerprints()[1] != student


def test_a_feature_term_reads_the_features(luigi_config):
    luigi_config("kd", "beta", "0.5")
    _, student, evaluation = fingerprints()
    luigi_config("teacher", "feature_dtype", "int8")
    assert fingerprints()[1] != student
    assert fingerprints()[2] != evaluation  # its model changed
    before = fingerprints()[1]
    luigi_config("kd", "feature_loss", "cosine")
    assert fingerprints()[1] != before


def test_a_rank_is_in_the_identity_only_where_it_applies(luigi_config):
    luigi_config("teacher", "logit_dtype", "int8")
    cache, student, _ = fingerprints()
    luigi_config("teacher", "logit_rank", "16")
    assert fingerprints()[0] != cache and fingerprints()[1] != student
    luigi_config("teacher", "topk", "5")  # a rank applies to every logit only: the top-k cache is the one without
    ranked_topk = fingerprints()
    luigi_config("teacher", "logit_rank", "0")
    assert fingerprints() == ranked_topk


def test_auto_keeps_float16_logits_until_the_classes_outnumber_the_rank(luigi_config):
    assert teacher().logit_dtype == "auto"
    default = fingerprints()
    luigi_config("teacher", "logit_dtype", "float16")
    assert fingerprints() == default  # the demo's few classes: its outputs stand
    luigi_config("teacher", "logit_dtype", "auto")
    classes = len(CacheTeacher("demo").requires()["store"].source.classes)
    luigi_config("teacher", "logit_rank", str(classes))
    assert fingerprints() == default
    luigi_config("teacher", "logit_rank", str(classes - 1))
    assert CacheTeacher("demo").pass_settings() | {"logit_dtype": "int8", "logit_rank": classes - 1} \
        == CacheTeacher("demo").pass_settings()
    assert fingerprints()[0] != default[0] and fingerprints()[1] != default[1]


def test_logits_from_the_features_read_how_the_features_are_kept(luigi_config):
    luigi_config("teacher", "logit_dtype", "head")
    _, student, evaluation = fingerprints()
    luigi_config("teacher", "stages", "1")  # maps still unread
    assert fingerprints()[1:] == (student, evaluation)
    luigi_config("teacher", "feature_dtype", "int4")  # its logits change: retrained
    assert fingerprints()[1] != student and fingerprints()[2] != evaluation
