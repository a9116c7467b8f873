"""Weights on disk: safetensors written atomically; safetensors or weights-only torch files read."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cache.files import atomic_path


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Save a plain timm state dict (a Net's backbone), loadable by timm users as is."""
    model = getattr(model, "backbone", model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def read_state(path: str | Path) -> dict:
    """A state dict from .safetensors, or from a torch file without unpickling code
    (weights_only); a {'state_dict': ...} or {'model': ...} wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights strictly, naming the file when they do not fit the model."""
    state = read_state(path)
    try:
        getattr(model, "backbone", model).load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit {type(model).__name__}: {err}") from None
    return model
