"""Finding classes and splits, and the one-line errors for folders a user can get wrong."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.data.folders import prediction_inputs, read_class_folders
from headstart.data.splits import find_splits, stratified_split
from headstart.errors import DataError
from tests.conftest import make_image


def _classes(root, counts):
    for name, n in counts.items():
        for i in range(n):
            make_image(root / name / f"{i}.png", (i * 10 % 255, 0, 0), size=8)
    return root


def test_train_and_val_folders_are_the_splits(tmp_path):
    _classes(tmp_path / "train", {"b": 3, "a": 2})
    _classes(tmp_path / "valid", {"a": 1, "b": 1})
    splits = find_splits(tmp_path)
    assert splits.train.class_names == ["a", "b"] and len(splits.train) == 5 and len(splits.val) == 2
    assert "valid/" in splits.how


def test_val_fraction_is_stratified_and_seeded(tmp_path):
    _classes(tmp_path, {"x": 10, "y": 20})
    first, second = find_splits(tmp_path, seed=3), find_splits(tmp_path, seed=3)
    assert first.val.counts() == {"x": 2, "y": 4}
    assert first.val.paths == second.val.paths
    assert not set(first.val.paths) & set(first.train.paths)
    assert find_splits(tmp_path, seed=4).val.paths != first.val.paths


def test_separate_val_folder(tmp_path):
    _classes(tmp_path / "d", {"x": 3, "y": 3})
    _classes(tmp_path / "v", {"x": 1})
    splits = find_splits(tmp_path / "d", val=tmp_path / "v")
    assert len(splits.train) == 6 and splits.val.counts() == {"x": 1, "y": 0}


def test_stratified_split_keeps_one_training_image_per_class():
    train, val = stratified_split(np.array([0, 0, 1]), 0.5, 0)
    assert set(np.array([0, 0, 1])[train]) == {0, 1} and len(val) == 1


@pytest.mark.parametrize("layout, message", [
    ({}, "no class folders"),
    ({"only": 2}, "only one class folder"),
    ({"a": 2, "b": 0}, "is empty"),
])
def test_bad_folders_give_one_line_errors(tmp_path, layout, message):
    for name, n in layout.items():
        (tmp_path / name).mkdir()
        _classes(tmp_path, {name: n})
    with pytest.raises(DataError, match=message) as info:
        find_splits(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_path_and_unknown_val_class(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_splits(tmp_path / "nope")
    _classes(tmp_path / "train", {"a": 2, "b": 2})
    _classes(tmp_path / "val", {"c": 1})
    with pytest.raises(DataError, match="classes the model does not know: c"):
        find_splits(tmp_path)


def test_hidden_files_are_ignored_and_subfolders_searched(tmp_path):
    _classes(tmp_path, {"a": 1, "b": 1})
    (tmp_path / "a" / ".DS_Store").write_text("x")
    make_image(tmp_path / "a" / "deeper" / "z.png", (0, 0, 0), size=8)
    assert read_class_folders(tmp_path).counts() == {"a": 2, "b": 1}
    assert len(prediction_inputs([tmp_path / "a", tmp_path / "b" / "0.png"])) == 3
