"""Weights on disk: safetensors written atomically; safetensors or weights-only torch files read."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from cache.storage.files import atomic_write_bytes
from models.factory import create


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Save a plain timm state dict (a Net's backbone), loadable by timm users as is."""
    model = getattr(model, "backbone", model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state))


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


def check_weights(path: str | Path, name: str, num_classes: int, head: bool = True, **kwargs) -> None:
    """Raise ValueError, saying why in a few words, unless the file at `path` reads as
    load_weights reads it and holds the weights of timm model `name` with `num_classes`
    classes and `kwargs`: every key, each with its shape, and no other. With head=False (a
    starting point, handed to timm as create(pretrained=path) does) the classifier may differ
    or be absent wherever timm resets it; the rest must match all the same, where timm would
    load what matches and silently leave the rest random. The model is built on the meta
    device (no memory)."""
    state = _readable_state(path)
    with torch.device("meta"):
        backbone = create(name, num_classes, **kwargs).backbone
    expected = {key: tuple(value.shape) for key, value in backbone.state_dict().items()}
    if not head:
        reset = _reset_by_timm(backbone, num_classes)
        state = {k: v for k, v in state.items() if k not in reset}
        expected = {k: v for k, v in expected.items() if k not in reset}
    if misfit := _misfit(state, expected):
        raise ValueError(f"not {name} weights{f' for {num_classes} classes' if head else ''}: {misfit}")


def _readable_state(path: str | Path) -> dict:
    """read_state's dict of tensors, or ValueError in our words: torch's own message on a file
    that is not weights advises unpickling it whole, which runs whatever code it holds."""
    try:
        state = read_state(path)
    except OSError as error:
        raise ValueError(f"cannot read it ({error})") from None
    except Exception as error:  # noqa: BLE001 (torch.load raises KeyError, EOFError, UnpicklingError...)
        if Path(path).suffix == ".safetensors":
            raise ValueError(f"not a safetensors file ({error})") from None
        raise ValueError("not a weights file (neither safetensors nor a torch file of plain tensors)") from None
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a state dict")
    if other := [key for key, value in state.items() if not isinstance(value, torch.Tensor)]:
        raise ValueError(f"not a state dict: {other[0]!r} is no tensor (a wrapper may be 'state_dict' or 'model')")
    return state


def _reset_by_timm(backbone: nn.Module, num_classes: int) -> set[str]:
    """The classifier keys timm's pretrained loader drops: all of them when the class count
    differs from the architecture's pretrained one, none otherwise."""
    cfg = backbone.pretrained_cfg
    if num_classes == cfg.get("num_classes"):
        return set()
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else classifiers
    return {f"{name}.{part}" for name in classifiers for part in ("weight", "bias")}


def _misfit(state: dict, expected: dict[str, tuple]) -> str:
    """How `state` differs from the keys and shapes `expected`, in a few words; "" if it does not."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [f"{key} is {tuple(state[key].shape)}, not {shape}"
              for key, shape in expected.items() if key in state and tuple(state[key].shape) != shape]
    parts = [f"{len(missing)} of the model's {len(expected)} keys missing (first: {missing[0]})"] if missing else []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
    parts += shapes[:2] + ([f"{len(shapes) - 2} more shapes differ"] if len(shapes) > 2 else [])
    return "; ".join(parts)
