"""Loading weights: timm's pretrained path from a local file, safetensors and weights-only
torch checkpoints, on weights made here (nothing can be downloaded)."""
import pytest
import torch
from torch import nn

import models
from cache.storage.files import atomic_write_text
from models.checkpoint import load_weights, save_weights


def _body(net: models.Net) -> dict:
    return {k: v for k, v in net.backbone.state_dict().items() if not k.startswith("head.fc")}


def test_pretrained_file_goes_through_timm_and_resets_the_classifier(tmp_path):
    torch.manual_seed(1)
    source = models.create("convnext_atto", num_classes=1000)
    save_weights(source, tmp_path / "imagenet.safetensors")
    torch.manual_seed(2)
    net = models.create("convnext_atto", num_classes=8, pretrained=str(tmp_path / "imagenet.safetensors"))
    assert net.backbone.head.fc.out_features == 8
    for key, value in _body(source).items():
        assert torch.equal(value, _body(net)[key]), key


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_torch_checkpoint_loads_weights_only_with_or_without_wrapper(tmp_path, wrap):
    source = models.create("convnext_atto", num_classes=4)
    state = source.backbone.state_dict()
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, tmp_path / "teacher.pth")
    net = load_weights(models.create("convnext_atto", num_classes=4), tmp_path / "teacher.pth")
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(source.eval()(x)[0], net.eval()(x)[0])


def test_checkpoint_that_does_not_fit_names_the_file(tmp_path):
    save_weights(models.create("convnext_atto", num_classes=4), tmp_path / "four.safetensors")
    with pytest.raises(ValueError, match="four.safetensors"):
        load_weights(models.create("convnext_atto", num_classes=5), tmp_path / "four.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_weights(models.create("convnext_atto", num_classes=5), tmp_path / "missing.pth")


def _accepts(attempt, *args, **kwargs) -> bool:
    try:
        attempt(*args, **kwargs)
    except ValueError:
        return False
    return True


def test_check_weights_accepts_what_load_weights_loads_and_nothing_else(tmp_path):
    four = models.create("convnext_atto", num_classes=4)
    save_weights(four, tmp_path / "four.safetensors")
    torch.save({"state_dict": four.backbone.state_dict(), "epoch": 3}, tmp_path / "four.pth")
    for path in (tmp_path / "four.safetensors", tmp_path / "four.pth"):
        for classes in (4, 5):
            loads = _accepts(load_weights, models.create("convnext_atto", num_classes=classes), path)
            assert _accepts(models.check_weights, path, "convnext_atto", classes) == loads == (classes == 4)
        # a starting point: timm resets the classifier of another class count
        assert _accepts(models.check_weights, path, "convnext_atto", 5, head=False)
        models.create("convnext_atto", num_classes=5, pretrained=str(path))


def test_weights_are_readable_as_every_other_output_is(tmp_path):
    # safetensors' own writer made them 0600: others on a shared work folder could not read them.
    models.save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    atomic_write_text(tmp_path / "settings.json", "{}")
    assert (tmp_path / "w.safetensors").stat().st_mode == (tmp_path / "settings.json").stat().st_mode
