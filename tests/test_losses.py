"""The distillation loss is exactly the documented formula."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.training.losses import DistillationLoss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g),
            torch.randn(8, 5, generator=g) * 3, torch.randn(8, 12, generator=g), torch.randn(8, 20, generator=g))


def direct_kd(logits, labels, teacher, alpha, t):
    """(1 - alpha) CE + alpha T^2 KL(p_teacher || p_student), written out by hand."""
    p = torch.softmax(teacher / t, 1)
    kl = (p * (torch.log(p) - torch.log_softmax(logits / t, 1))).sum(1).mean()
    return (1 - alpha) * F.cross_entropy(logits, labels) + alpha * t * t * kl


@pytest.mark.parametrize("alpha,t", [(0.7, 4.0), (0.5, 1.0), (1.0, 2.5)])
def test_kd_loss_matches_formula(batch, alpha, t):
    logits, labels, teacher, _, _ = batch
    loss = DistillationLoss(alpha=alpha, temperature=t)(logits, labels, teacher.half())
    assert torch.allclose(loss, direct_kd(logits, labels, teacher.half().float(), alpha, t), atol=1e-5)


def test_without_teacher_it_is_cross_entropy(batch):
    logits, labels, *_ = batch
    assert torch.equal(DistillationLoss(alpha=0.9)(logits, labels), F.cross_entropy(logits, labels))


def test_hard_distillation_uses_teacher_argmax(batch):
    logits, labels, teacher, _, _ = batch
    loss = DistillationLoss(alpha=0.5, hard=True)(logits, labels, teacher)
    expected = 0.5 * F.cross_entropy(logits, labels) + 0.5 * F.cross_entropy(logits, teacher.argmax(1))
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_feature_term_goes_through_the_projector(batch, kind):
    logits, labels, teacher, feats, teacher_feats = batch
    loss_fn = DistillationLoss(alpha=0.5, temperature=2, beta=0.3, feature_loss=kind,
                               student_dim=12, teacher_dim=20)
    projected = loss_fn.projector(feats)
    term = (F.mse_loss(projected, teacher_feats) if kind == "mse"
            else (1 - F.cosine_similarity(projected, teacher_feats)).mean())
    expected = direct_kd(logits, labels, teacher, 0.5, 2) + 0.3 * term
    assert torch.allclose(loss_fn(logits, labels, teacher, feats, teacher_feats), expected, atol=1e-5)
    loss_fn(logits, labels, teacher, feats, teacher_feats).backward()
    assert loss_fn.projector.weight.grad.abs().sum() > 0


def test_bad_feature_loss_is_refused():
    with pytest.raises(ValueError, match="feature_loss"):
        DistillationLoss(feature_loss="l1")
