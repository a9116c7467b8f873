"""The logit codings beyond today's top-k: a tail at the distillation temperature, a sampled
tail, every logit quantized. Each gives the full loss where it must: exactly at K = C, in
expectation over the draws for a sampled tail, within half a step for int8 and int4."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from support.logits import probabilities, teacher_like_logits
from support.slow_runs import TEACHER, encoding

import models
from cache.compact import (
    classifier_basis,
    dequantize_logits,
    quantize_logits,
    sample_tail,
    tail_uniforms,
    topk_decode,
    topk_encode,
)
from cache.export import export_hdf5, read_attrs
from cache.reader import TeacherCache
from cache.schema import LogitCoding
from pipeline.api import Cached
from pipeline.data.imagestore import ImageStore
from pipeline.teacher.teacher_pass import cache_teacher
from pipeline.training.losses import DistillationLoss

T = 4.0


def kd_term(student: torch.Tensor, teacher: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The loss's soft term alone (alpha = 1), per batch."""
    return DistillationLoss(alpha=1.0, temperature=T)(student, torch.zeros(len(student), dtype=torch.long),
                                                      torch.as_tensor(teacher))


@pytest.mark.parametrize("k", [1, 10])
def test_a_tempered_tail_keeps_the_top_k_and_the_tail_mass_at_its_temperature(k):
    logits = teacher_like_logits(200, 1000)
    values, indices, tail = topk_encode(logits, k, T)
    full, rebuilt = probabilities(logits, T), probabilities(topk_decode(values, indices, tail, 1000, T), T)
    rows = np.arange(200)[:, None]
    np.testing.assert_allclose(rebuilt[rows, indices], full[rows, indices], rtol=2e-2, atol=1e-6)
    outside = np.ones_like(full, dtype=bool)
    outside[rows, indices] = False
    np.testing.assert_allclose((rebuilt * outside).sum(1), (full * outside).sum(1), rtol=2e-2)
    # The flat tail rebuilt from its mass at 1 holds more at T than the real tail (power-mean).
    flat = probabilities(topk_decode(*topk_encode(logits, k), 1000), T)
    assert ((flat * outside).sum(1) > (full * outside).sum(1) + 1e-4).mean() > 0.9


@pytest.mark.parametrize("tail", ["flat", "tempered"])
def test_at_k_equal_c_a_top_k_coding_gives_the_full_loss(tail):
    logits = teacher_like_logits(16, 40)
    student = torch.as_tensor(teacher_like_logits(16, 40, seed=1))
    rebuilt = topk_decode(*topk_encode(logits, 40, T if tail == "tempered" else 1.0), 40,
                          T if tail == "tempered" else 1.0)
    assert torch.equal(kd_term(student, rebuilt), kd_term(student, logits.astype(np.float16).astype(np.float32)))


def sampled_targets(logits: np.ndarray, k: int, samples: int, draws: int, seed: int = 0) -> np.ndarray:
    """`draws` independent sampled codings of `logits` (n, C), rebuilt: (draws, n, C)."""
    values, indices, tail = (np.broadcast_to(a, (draws, *a.shape)) for a in topk_encode(logits, k, T))
    uniforms = np.random.default_rng(seed).random((draws, *logits.shape[:-1]))
    drawn = sample_tail(np.broadcast_to(logits, (draws, *logits.shape)), indices, T, uniforms, samples)
    assert drawn.shape == (draws, len(logits), samples) and (np.diff(drawn.astype(np.int64), axis=-1) >= 0).all()
    assert not (drawn[..., :, None] == indices[..., None, :]).any()  # the tail only
    return topk_decode(values, indices, tail, logits.shape[-1], T, drawn)


@pytest.mark.parametrize("k", [0, 5])
def test_a_sampled_tail_is_unbiased_its_gradient_the_full_one_in_expectation(k):
    logits = teacher_like_logits(4, 100)
    student = torch.as_tensor(teacher_like_logits(4, 100, seed=1), dtype=torch.float64).requires_grad_()
    draws = 4000
    rebuilt = sampled_targets(logits, k, 16, draws)
    target = torch.as_tensor(logits, dtype=torch.float64)
    mean_p = probabilities(rebuilt, T).mean(0)
    np.testing.assert_allclose(mean_p, probabilities(logits, T), atol=4 / np.sqrt(draws * 16) * 0.5)

    def gradient(teacher: torch.Tensor) -> np.ndarray:
        student.grad = None
        kd_term(student, teacher).backward()
        return student.grad.numpy().copy()

    full = gradient(target)
    # Averaged over draws the gradient (linear in the target distribution) is the full one, within
    # 4 standard errors and the float16 rounding of the kept logits and the tail's mass.
    gradients = np.array([gradient(torch.as_tensor(r, dtype=torch.float64)) for r in rebuilt[:400]])
    allowed = 4 * gradients.std(0) / np.sqrt(400) + 4e-3 * np.abs(full).max()
    assert (np.abs(gradients.mean(0) - full) <= allowed).all()
    # The flat top-k tail's gradient is not the full one: the control that the check can fail.
    flat = gradient(torch.as_tensor(topk_decode(*topk_encode(logits, max(k, 5)), 100), dtype=torch.float64))
    assert (np.abs(flat - full) > allowed).any()


def test_sampled_draws_belong_to_their_row_whatever_the_block():
    rows = np.array([3, 7, 11, 20])
    together = tail_uniforms(0, "aug", rows, (8,))
    apart = np.concatenate([tail_uniforms(0, "aug", rows[i:i + 1], (8,)) for i in range(4)])
    np.testing.assert_array_equal(together, apart)
    assert not np.array_equal(together, tail_uniforms(0, "eval", rows, (8,)))
    assert not np.array_equal(together, tail_uniforms(1, "aug", rows, (8,)))


@pytest.mark.parametrize("dtype, top", [("int8", 127), ("int4", 7)])
def test_quantized_logits_are_within_half_a_step_and_their_softmax_within_a_step(dtype, top):
    logits = teacher_like_logits(64, 1000) + 50  # far from zero: the offset must carry it
    codes, scales, offsets = quantize_logits(logits, dtype)
    rebuilt = dequantize_logits(codes, scales, offsets, 1000 if dtype == "int4" else None)
    step = scales.astype(np.float32)[:, None]
    assert (np.abs(rebuilt - logits) <= step / 2 + np.abs(logits) * 2 ** -11).all()
    # Scaled to the view's range, not to max|x| (the offset's float16 rounding widens it a little).
    half_range = (logits.max(1) - logits.min(1)) / 2 + np.abs(offsets.astype(np.float32)) * 2 ** -11
    assert (step[:, 0] <= half_range / top * (1 + 2 ** -10)).all()
    gap = np.abs(np.log(probabilities(rebuilt, T)) - np.log(probabilities(logits, T)))
    assert (gap.max(1) <= step[:, 0] / T * 1.01 + 1e-4).all()


@pytest.fixture(scope="module")
def sampled(tiny_data, tmp_path_factory):
    """The tiny teacher's cache with top-2 logits and 8 classes sampled from each view's tail."""
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path_factory.mktemp("sampled") / "cache.zarr"),
                              **encoding("topk=2 tail=sampled samples=8 feature_dtype=none"))
    store = ImageStore(tiny_data["store"])
    cache_teacher(job, store.rows("train"), len(store.labels), 320, {"identity": tiny_data["identity"]},
                  "synchronous", 1, 16)
    return TeacherCache(job.out)


def test_a_sampled_cache_keeps_the_full_cache_s_top_k_and_tail_mass_at_t(sampled, tiny_data):
    full = TeacherCache(tiny_data["cache"])
    assert sorted(sampled.group["aug"].array_keys()) == ["params", "rows", "sample_indices", "tail_logsumexp",
                                                         "topk_indices", "topk_values"]
    assert sampled.group["aug/tail_logsumexp"].attrs["temperature"] == T
    index = np.arange(len(sampled.aug_rows))
    p_full = probabilities(full.aug_logits.take(index).astype(np.float32), T)
    p_cached = probabilities(sampled.aug_logits.take(index), T)
    kept = sampled.aug_logits.indices.take(index).astype(np.int64)
    np.testing.assert_allclose(np.take_along_axis(p_cached, kept, -1), np.take_along_axis(p_full, kept, -1), rtol=2e-2)
    assert ((p_cached > 0).sum(-1) <= 2 + 8).all()  # the kept classes and at most 8 drawn ones
    np.testing.assert_allclose(p_cached.sum(-1), 1, rtol=1e-5)


def test_export_carries_a_sampled_cache_s_arrays_and_attributes(sampled, tmp_path):
    out = export_hdf5(sampled.path, tmp_path / "cache.h5")
    with h5py.File(out, "r") as f:
        for split in ("eval", "aug"):
            for name in ("topk_values", "topk_indices", "tail_logsumexp", "sample_indices"):
                np.testing.assert_array_equal(f[f"{split}/{name}"][:], sampled.group[f"{split}/{name}"][:])
        assert read_attrs(f["aug/tail_logsumexp"]) == {"temperature": T}
        assert read_attrs(f["aug/sample_indices"])["classes"] == sampled.aug_logits.classes


def test_a_cache_of_int8_logits_reads_back_every_logit(tiny_data, tmp_path):
    job = dataclasses.replace(tiny_data["job"], out=str(tmp_path / "cache.zarr"), coding=LogitCoding(dtype="int8"))
    store = ImageStore(tiny_data["store"])
    cache_teacher(job, store.rows("train"), len(store.labels), 320, {"identity": tiny_data["identity"]},
                  "synchronous", 1, 16)
    cache, full = TeacherCache(job.out), TeacherCache(tiny_data["cache"])
    assert cache.group["aug/logits"].dtype == np.int8 and "aug/logits_offsets" in cache.group
    index = np.arange(len(cache.aug_rows))
    reference = full.aug_logits.take(index).astype(np.float32)
    step = cache.group["aug/logits_scales"][:].astype(np.float32)[..., None]
    assert (np.abs(cache.aug_logits.take(index) - reference) <= step / 2 + np.abs(reference) * 2 ** -10).all()


def test_the_api_names_the_temperature_a_sampled_cache_was_made_for(sampled, tiny_data):
    store = ImageStore(tiny_data["store"])
    assert Cached(store, sampled).temperature == T
    assert Cached(store, TeacherCache(tiny_data["cache"])).temperature is None
    assert Cached(store, None).temperature is None


def test_systematic_draws_give_each_class_its_share_within_one_draw():
    logits = teacher_like_logits(50, 100)
    _, kept, _ = topk_encode(logits, 5, T)
    drawn = sample_tail(logits, kept, T, np.random.default_rng(0).random(50), 16).astype(np.int64)
    counts = np.zeros((50, 100))
    np.add.at(counts, (np.repeat(np.arange(50), 16), drawn.reshape(-1)), 1)
    tail = probabilities(logits, T)
    np.put_along_axis(tail, kept.astype(np.int64), 0, axis=-1)
    expected = 16 * tail / tail.sum(1, keepdims=True)
    assert (np.abs(counts - expected) < 1 + 1e-9).all() and (counts[np.arange(50)[:, None], kept] == 0).all()


def encoded_cache(tiny_data, out, spec: str) -> TeacherCache:
    """The tiny cache made again with these [teacher] keys."""
    job = dataclasses.replace(tiny_data["job"], out=str(out), **encoding(spec))
    store = ImageStore(tiny_data["store"])
    cache_teacher(job, store.rows("train"), len(store.labels), 320, {"identity": tiny_data["identity"]},
                  "synchronous", 1, 16)
    return TeacherCache(job.out)


def test_logits_from_float16_features_by_the_teacher_s_head_give_the_full_loss(tiny_data, tmp_path):
    cache = encoded_cache(tiny_data, tmp_path / "cache.zarr", "logit_dtype=head feature_dtype=float16")
    full = TeacherCache(tiny_data["cache"])
    assert "aug/logits" not in cache.group and cache.group["head/weight"].shape == (full.aug_logits.shape[-1], 320)
    index = np.arange(len(cache.aug_rows))
    reference = full.aug_logits.take(index).astype(np.float32).reshape(-1, full.aug_logits.shape[-1])
    rebuilt = cache.aug_logits.take(index).reshape(reference.shape)
    # float16 features moved each logit by at most |weight| . |features| 2^-11; the full cache's own rounding beside it.
    reach = np.abs(cache.group["head/weight"][:]).sum(1).max() * np.abs(full.aug_features.take(index)).max(-1).ravel()
    assert (np.abs(rebuilt - reference).max(-1) <= reach * 2 ** -10 + np.abs(reference).max(-1) * 2 ** -10).all()
    student = torch.randn(*reference.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(kd_term(student, rebuilt), kd_term(student, reference), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(cache.eval_logits.take(np.arange(4)),
                               full.eval_logits.take(np.arange(4)).astype(np.float32), rtol=1e-2, atol=1e-3)


def test_export_carries_the_teacher_s_head(tiny_data, tmp_path):
    cache = encoded_cache(tiny_data, tmp_path / "cache.zarr", "logit_dtype=head feature_dtype=int8")
    with h5py.File(export_hdf5(cache.path, tmp_path / "cache.h5"), "r") as f:
        logits = f["aug/features"][:3].astype(np.float32) * f["aug/features_scales"][:3][..., None]
        rebuilt = logits @ f["head/weight"][:].T + f["head/bias"][:]
    np.testing.assert_allclose(rebuilt, cache.aug_logits.take(np.arange(3)), rtol=1e-5, atol=1e-5)


def test_the_classifier_basis_is_orthonormal_signed_and_blind_to_the_class_mean():
    weight = np.random.default_rng(0).standard_normal((30, 12)).astype(np.float32)
    basis = classifier_basis(weight, 8)
    np.testing.assert_allclose(basis.T @ basis, np.eye(8), atol=1e-5)
    assert (basis[np.abs(basis).argmax(0), np.arange(8)] > 0).all()
    np.testing.assert_allclose(classifier_basis(weight + np.float32(3) * weight[0], 8), basis, atol=1e-4)
    assert classifier_basis(weight[:5], 8).shape == (12, 5)  # at most one per class


def test_logits_in_full_rank_give_the_full_loss(tiny_data, tmp_path):
    full = TeacherCache(tiny_data["cache"])
    classes = full.aug_logits.shape[-1]
    cache = encoded_cache(tiny_data, tmp_path / "cache.zarr", "logit_rank=1000 logit_dtype=int8 feature_dtype=none")
    kept = {name for name, _ in cache.group.members(max_depth=None)}
    assert not {"aug/logits", "aug/features", "aug/logit_coords"} & kept  # few classes: every coordinate float16
    assert cache.group["aug/logit_lead"].shape[-1] == classes and cache.group["head/weight"].shape == (classes,) * 2
    index = np.arange(len(cache.aug_rows))
    reference = full.aug_logits.take(index).astype(np.float32).reshape(-1, classes)
    rebuilt = cache.aug_logits.take(index).reshape(reference.shape)
    # Its C directions hold every difference between classes: the softmax is the teacher's (its
    # logits may differ by a number a view), but for the coordinates' float16 rounding.
    student = torch.randn(*reference.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(kd_term(student, rebuilt), kd_term(student, reference), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.log_softmax(torch.as_tensor(rebuilt), -1),
                               torch.log_softmax(torch.as_tensor(reference), -1), rtol=0, atol=2e-2)


def test_logits_in_rank_m_are_the_features_on_m_directions_and_export_with_them(tiny_data, tmp_path):
    full = TeacherCache(tiny_data["cache"])
    cache = encoded_cache(tiny_data, tmp_path / "cache.zarr",
                          "logit_rank=4 logit_lead=1 logit_dtype=int8 feature_dtype=none")
    projection = cache.group["head/projection"][:]
    weight, bias = (t.numpy() for t in models.load_weights(models.create(TEACHER, full.aug_logits.shape[-1]),
                                                           tiny_data["weights"]).classifier())
    np.testing.assert_allclose(projection, classifier_basis(weight, 4))
    assert cache.group["aug/logit_lead"].shape[-1] == 1 and cache.group["aug/logit_coords"].shape[-1] == 3
    features = full.aug_features.take(np.arange(3)).astype(np.float32)  # float16, as the full cache keeps them
    coords = features @ projection
    expected = coords @ (weight @ projection).T + bias
    rebuilt = cache.aug_logits.take(np.arange(3))
    # The leading coordinate within float16's rounding, the others within half an int8 step of their view's
    # largest, each weighed by the head's row; and the features' own float16 rounding.
    reach = np.abs(weight @ projection).sum(1).max() * np.abs(coords).max(-1, keepdims=True)
    assert (np.abs(rebuilt - expected) <= reach * (1 / 254 + 2 ** -10) + 1e-4).all()
    lead = cache.group["aug/logit_lead"][:3, ..., 0].astype(np.float32)
    assert (np.abs(lead - coords[..., 0]) <= np.abs(coords[..., 0]) * 2 ** -10 + 1e-3).all()
    with h5py.File(export_hdf5(cache.path, tmp_path / "cache.h5"), "r") as f:
        rest = f["aug/logit_coords"][:3].astype(np.float32) * f["aug/logit_coords_scales"][:3][..., None]
        stored = np.concatenate([f["aug/logit_lead"][:3].astype(np.float32), rest], -1)
        np.testing.assert_allclose(stored @ f["head/weight"][:].T + f["head/bias"][:], rebuilt, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(f["head/projection"][:], projection)


def test_a_teacher_whose_classifier_is_no_linear_layer_is_refused(monkeypatch):
    import models
    net = models.create("convnext_atto", 4)
    monkeypatch.setattr(net.backbone, "get_classifier", lambda: torch.nn.Identity())
    with pytest.raises(ValueError, match="keep the logits"):
        net.classifier()
