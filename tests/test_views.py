"""Views are reproducible for a seed, differ across images and epochs, and render exactly."""
import numpy as np
import torch

from pipeline.views.records import random_views, render, whole_views


def test_views_reproducible_in_any_order_and_subset():
    keys = np.arange(20)
    views = random_views(7, keys, 4, 48)
    assert np.array_equal(views, random_views(7, keys, 4, 48))
    assert np.array_equal(views[[15, 3]], random_views(7, keys[[15, 3]], 4, 48))
    assert not np.array_equal(views, random_views(8, keys, 4, 48))


def test_views_differ_across_images_views_and_epochs():
    views = random_views(0, np.arange(50), 3, 48)
    boxes = {tuple(v) for v in views.reshape(-1, 5).tolist()}
    assert len(boxes) > 0.9 * 150
    epochs = random_views(0, np.array([[5, 0], [5, 1], [5, 2]]), 1, 48)[:, 0]
    assert len({tuple(v) for v in epochs.tolist()}) == 3
    y, x, h, w, flip = views.reshape(-1, 5).T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 48).all() and (x + w <= 48).all()
    assert 0.2 < flip.mean() < 0.8


def test_whole_view_is_the_image_and_flip_mirrors_it():
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    expected = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
    params = whole_views(3, 16)
    assert torch.allclose(render(images, params, 16), expected, atol=1e-6)
    params[1, 4] = 1
    out = render(images, params, 16)
    assert torch.allclose(out[1], expected[1].flip(-1), atol=1e-6)
    assert torch.allclose(out[0], expected[0], atol=1e-6)


def test_crop_then_resize_reads_the_box():
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 8:24, 4:20] = 255  # a white box; view exactly onto it
    out = render(image, np.array([[8, 4, 16, 16, 0]], dtype=np.float32), 8)
    assert torch.allclose(out, torch.ones_like(out))


def test_views_of_one_image_render_as_views_of_its_copies():
    images = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    params = random_views(0, np.arange(2), 3, 16).reshape(-1, 5)
    copies = render(np.repeat(images, 3, axis=0), params, 8)
    assert torch.equal(render(images, params, 8, np.repeat(np.arange(2), 3)), copies)
