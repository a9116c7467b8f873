"""The embedded data set: deterministic, balanced, and different for another seed."""
import numpy as np

from pipeline.data.synthetic import CLASSES, SyntheticSource, render


def test_same_seed_same_images_in_any_order():
    source = SyntheticSource(seed=3, train_per_class=2, test_per_class=1, size=32)
    items = source.items()
    forward = [np.asarray(source.load(i)) for i in items]
    backward = [np.asarray(source.load(i)) for i in reversed(items)][::-1]
    again = [np.asarray(SyntheticSource(seed=3, train_per_class=2, test_per_class=1, size=32).load(i))
             for i in items]
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(forward, backward, again))


def test_other_seed_other_images_and_fingerprint():
    a, b = SyntheticSource(seed=0, size=32), SyntheticSource(seed=1, size=32)
    item = a.items()[0]
    assert not np.array_equal(np.asarray(a.load(item)), np.asarray(b.load(item)))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == SyntheticSource(seed=0, size=32).fingerprint()


def test_splits_are_balanced_and_images_vary():
    source = SyntheticSource(seed=0, train_per_class=5, test_per_class=3, size=40)
    items = source.items()
    for split, per_class in (("train", 5), ("test", 3)):
        labels = [i.label for i in items if i.split == split]
        assert np.bincount(labels).tolist() == [per_class] * len(CLASSES)
    assert len({i.id for i in items}) == len(items)
    images = np.stack([render(0, i, i % len(CLASSES), 40) for i in range(16)])
    assert images.shape == (16, 40, 40, 3) and images.dtype == np.uint8
    assert images.std(axis=0).mean() > 20  # not one template: backgrounds, poses, colours vary
