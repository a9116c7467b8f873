"""The model factory over timm: one entry point, `create`, and checkpoint load/save."""
from models.checkpoint import check_weights, load_weights, save_weights
from models.factory import Net, check_build, check_classifier, create, timm_distillation, timm_version

__all__ = ["Net", "check_build", "check_classifier", "check_weights", "create", "load_weights", "save_weights",
           "timm_distillation", "timm_version"]
