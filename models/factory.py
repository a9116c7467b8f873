"""Build any timm classifier as a `Net`: [0, 1] RGB in, (logits, pooled features) out."""
from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata

import torch
from torch import nn


class Net(nn.Module):
    """A timm backbone that normalises its input the way it was trained and returns
    (logits, pooled pre-logit features), the two things a student distills from."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        cfg = backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.num_features: int = backbone.num_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone.forward_features((x - self.mean) / self.std)
        # Two head calls rather than guessing which layer is the classifier: cheap and
        # right for every timm family.
        features = self.backbone.forward_head(maps, pre_logits=True)
        return self.backbone.forward_head(maps), features

    def forward_with_stages(self, x: torch.Tensor, stages: tuple[int, ...]
                            ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """forward(x) plus the feature maps of the given stages (timm's feature indices),
        in one pass."""
        maps, inner = self.backbone.forward_intermediates((x - self.mean) / self.std, indices=list(stages))
        features = self.backbone.forward_head(maps, pre_logits=True)
        return self.backbone.forward_head(maps), features, inner

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (C, D), bias (C,)) of the linear layer that maps the pooled pre-logit
        features to the logits, for a cache that keeps the features alone."""
        fc = self.backbone.get_classifier()
        if not isinstance(fc, nn.Linear) or fc.in_features != self.num_features:
            what = type(fc).__name__ + (f" on {fc.in_features} inputs" if isinstance(fc, nn.Linear) else "")
            raise ValueError(f"{type(self.backbone).__name__}'s classifier is {what}, not one linear layer on its "
                             f"{self.num_features} pooled features: logits cannot be rebuilt from the features "
                             "(logit_dtype = head, logit_rank); keep the logits (float16, int8 or int4)")
        bias = fc.bias if fc.bias is not None else torch.zeros(fc.out_features)
        return fc.weight.detach(), bias.detach()

    def stage_shapes(self, stages: tuple[int, ...], image_size: int) -> dict[int, tuple]:
        """The (C, H, W) of each stage's feature maps at this input size."""
        count = len(self.backbone.feature_info)
        if not all(0 <= stage < count for stage in stages):
            raise ValueError(f"stages {list(stages)}: {type(self.backbone).__name__} has stages 0 to {count - 1}")
        if not stages:
            return {}
        with torch.inference_mode():
            maps = self.forward_with_stages(torch.zeros(1, 3, image_size, image_size), stages)[2]
        return {stage: tuple(m.shape[1:]) for stage, m in zip(stages, maps)}


def _mvit_cfg(name: str, overrides: dict) -> dict:
    """timm's MViT v2 sizes its stages through a config dataclass, not keyword arguments;
    `cfg={...}` overrides fields of the named variant's config, registered under a new
    variant name that timm's public `cfg_variant` kwarg then selects. The registry,
    `timm.models.mvitv2.model_cfgs`, is timm's internal: this is the one place that uses it."""
    from timm.models import mvitv2
    registry = getattr(mvitv2, "model_cfgs", None)
    if not isinstance(registry, dict) or name not in registry:
        raise ValueError(f"{name} cfg={overrides}: this timm ({timm_version()}) no longer exposes "
                         "mvitv2.model_cfgs, which `cfg=` needs; give the model without cfg= or use timm 1.0.x")
    variant = f"{name}-{sorted(overrides.items())}"
    registry[variant] = dataclasses.replace(registry[name], **overrides)
    return {"cfg_variant": variant}


def create(name: str, num_classes: int, pretrained: bool | str = False, **kwargs) -> Net:
    """A timm model by name and kwargs, wrapped as a Net. `pretrained` is False, True
    (timm's weights for the name) or a local weights file handed to timm's own loader."""
    import timm  # here, not at the top: its import (torchvision's with it) costs seconds a command builds no model
    kwargs = dict(kwargs)
    if name.startswith("mvitv2") and "cfg" in kwargs:
        kwargs |= _mvit_cfg(name, kwargs.pop("cfg"))
    backbone = timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes,
                                 **_pretrained_file(pretrained), **kwargs)
    return Net(backbone)


def timm_distillation(student: Net, teacher: Net, alpha: float, temperature: float) -> nn.Module:
    """timm's own online logit distillation (timm.task.LogitDistillationTask) of `student` by
    `teacher`, weighted as DistillationLoss weighs its terms: the benchmark's independent peer
    of our online mode. It takes inputs normalised for the student (a Net normalises inside
    itself) and returns {"loss": ...}; its trainable_module holds the student."""
    from timm.task import LogitDistillationTask
    return LogitDistillationTask(student.backbone, teacher.backbone, temperature=temperature,
                                 task_loss_weight=1 - alpha, distill_loss_weight=alpha, verbose=False)


def timm_version() -> str:
    return importlib.metadata.version("timm")  # without importing timm


def check_classifier(name: str, **kwargs) -> None:
    """Raise Net.classifier()'s reason where the model's classifier is not one linear layer
    on its pooled features (built on the meta device)."""
    with torch.device("meta"):
        create(name, 2, **kwargs).classifier()


def check_build(name: str, image_size: int | None, stages: tuple[int, ...] = (), **kwargs) -> None:
    """Build the model on the meta device (no memory, no weights, fast at any size) and run
    one image of `image_size` through it and its `stages` (build only when None): raises
    what a real build or forward would raise, so a bad name, kwarg or size is found before
    any work."""
    import timm
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ValueError(f"unknown timm model {name!r}"
                         + (f"; did you mean {' or '.join(close)}?" if close else ""))
    with torch.device("meta"):
        net = create(name, 2, **kwargs)
        if image_size is not None:
            net.stage_shapes(stages, image_size)
            net(torch.zeros(1, 3, image_size, image_size))


def _pretrained_file(pretrained: bool | str) -> dict:
    if isinstance(pretrained, str):
        return {"pretrained_cfg_overlay": {"file": pretrained}}
    return {}
