"""Image folders: layouts training can use, and clear errors for the ones it cannot."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.data import load_dataset, split
from pipeline.core.errors import PipelineError
from tests.helpers import write_image_folder


def test_folder_loads_resized_with_class_names(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=3, per_class=5, size=20)
    data = load_dataset(root, 32)
    assert data.images.shape == (15, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert np.bincount(data.labels).tolist() == [5, 5, 5]


def test_corrupt_and_non_image_files_are_skipped_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "d", classes=2, per_class=4)
    (root / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "class_1" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        data = load_dataset(root, 32)
    assert data.skipped == 2 and len(data) == 8


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r: (r / "a").mkdir(parents=True) or (r / "b").mkdir(), "is empty"),
        (lambda r: write_image_folder(r, classes=1, per_class=3), "single class"),
        (lambda r: r.mkdir(), "no class folders"),
    ],
)
def test_unusable_layouts_raise_one_line(tmp_path, make, message):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(PipelineError, match=message) as info:
        load_dataset(root, 32)
    assert "\n" not in str(info.value)


def test_missing_folder_and_unknown_builtin(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_dataset(tmp_path / "nope", 32)
    with pytest.raises(PipelineError, match="unknown built-in"):
        load_dataset("builtin:mnist", 32)


def test_builtin_digits_is_real_ten_class_data():
    data = load_dataset("builtin:digits", 32)
    assert len(data) == 1797 and len(data.class_names) == 10
    assert data.images.shape[1:] == (32, 32, 3) and data.images.max() > 200


def test_split_is_stratified_disjoint_and_reproducible():
    data = load_dataset("builtin:digits", 16)
    train, val = split(data, 0.2, seed=3)
    again_train, again_val = split(data, 0.2, seed=3)
    assert len(train) + len(val) == len(data)
    assert np.array_equal(val.labels, again_val.labels) and np.array_equal(val.images, again_val.images)
    per_class = np.bincount(val.labels) / np.bincount(data.labels)
    assert np.all(np.abs(per_class - 0.2) < 0.02)


def test_training_batches_mix_every_class_even_when_images_are_stored_class_by_class():
    from pipeline.core.data import ImageSet
    from pipeline.stages.train import make_dataset

    per_class, classes = 2500, 10  # larger than any fixed shuffle buffer a pipeline might pick
    data = ImageSet(np.zeros((per_class * classes, 4, 4, 3), np.uint8),
                    np.repeat(np.arange(classes), per_class), [f"c{i}" for i in range(classes)])
    for _, onehot in make_dataset(data, 256, training=True).take(2):
        seen = np.bincount(np.argmax(onehot.numpy(), axis=1), minlength=classes)
        assert (seen > 0).all(), seen
