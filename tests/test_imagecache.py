"""The memory loader: images decoded once, batches augmented in one call, the same images kept and skipped as the
streaming loader, evaluation batches exactly as predictions preprocess them; and what a run is planned to cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headstart.data.imagecache
from headstart.codes.create import create_backbone
from headstart.data.folders import read_class_folders
from headstart.data.imagecache import augment_batch, random_boxes
from headstart.training.cost import SETUP_S, TrainingCost
from headstart.training.datamodule import ImageDataModule
from headstart.training.options import FineTuneConfig
from headstart.training.run import fine_tune


def test_random_boxes_are_inside_the_image_with_torchvisions_areas_and_ratios():
    boxes = random_boxes(2000, 40, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 40).all() and (w >= 1).all() and (h >= 1).all()
    area = (w * h / 1600).numpy()
    assert 0.3 < area.min() < 0.4 and area.max() <= 1.0 and 0.6 < np.median(area) < 0.75
    assert len({(float(a), float(b)) for a, b in zip(w, h)}) > 100  # crops differ from image to image


def test_batch_crops_are_torchvisions_resized_crop_and_flip_on_pil_images():
    """The memory loader's augmentation computes what the streaming path's torchvision transform computes."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from headstart.data.imagecache import resized_crops

    generator = torch.Generator().manual_seed(0)
    for side, output in ((28, 96), (40, 32), (256, 224)):  # enlarging (X-rays), shrinking
        stored = torch.randint(0, 256, (8, side, side, 3), dtype=torch.uint8, generator=generator)
        boxes = random_boxes(8, side, generator)
        flip = torch.rand(8, generator=generator) < 0.5
        batch = resized_crops(stored, boxes, flip, output)
        for image, (x1, y1, x2, y2), mirrored, got in zip(stored.numpy(), boxes.int().tolist(), flip, batch):
            expected = F.resized_crop(Image.fromarray(image), y1, x1, y2 - y1, x2 - x1, [output, output],
                                      InterpolationMode.BICUBIC)
            expected = np.asarray(F.hflip(expected) if mirrored else expected)
            assert np.array_equal(got.numpy(), expected)


def test_augment_batch_draws_crops_and_flips():
    out = augment_batch(torch.randint(0, 256, (16, 20, 20, 3), dtype=torch.uint8), 24,
                        torch.Generator().manual_seed(1))
    assert out.shape == (16, 24, 24, 3) and out.dtype == torch.uint8


def _modules(colors_data, tmp_path):
    images = read_class_folders(colors_data / "train")
    broken = colors_data.parent / "broken_train"
    import shutil

    if not broken.exists():
        shutil.copytree(colors_data / "train", broken)
        (broken / "red" / "zz_broken.png").write_bytes(b"not an image")
    images = read_class_folders(broken)
    preprocess = create_backbone("test_efficientnet", "none", image_size=32).preprocess
    return images, preprocess, [ImageDataModule(images, preprocess, FineTuneConfig(loader=name, workers=0),
                                                folder=tmp_path) for name in ("memory", "stream")]


def test_both_loaders_keep_and_skip_the_same_images_and_evaluate_the_same_pixels(colors_data, tmp_path):
    images, preprocess, (memory, stream) = _modules(colors_data, tmp_path)
    for data in (memory, stream):
        data.setup("fit")
    assert memory.skipped == stream.skipped and [s[0].endswith("zz_broken.png") for s in memory.skipped] == [True]
    assert list(memory.usable.paths) == list(stream.usable.paths)
    assert memory.image_cache["where"] == "memory" and memory.image_cache["side"] == preprocess.scale_size < 48
    monitor = list(memory.val_dataloader())
    streamed = list(stream.val_dataloader())
    assert len(monitor) == len(streamed)
    for (a, la, _), (b, lb, _) in zip(monitor, streamed):  # square images: the very same pixels and labels
        assert torch.equal(a, b) and torch.equal(la, lb)
    train = next(iter(memory.train_dataloader()))
    assert train[0].shape[1:] == (32, 32, 3) and train[0].dtype == torch.uint8 and train[2] == []


def test_images_too_large_for_memory_go_to_a_file_that_training_removes(colors_data, tmp_path, monkeypatch):
    monkeypatch.setattr(headstart.data.imagecache, "MEMORY_LIMIT", 0)
    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    images = read_class_folders(colors_data / "train")
    config = FineTuneConfig(unfreeze="all", epochs=1, probe_epochs=0, batch_size=8, workers=0)
    data = ImageDataModule(images, backbone.preprocess, config, folder=tmp_path)
    data.prepare_data()
    where, side = data.image_cache["where"], backbone.preprocess.scale_size
    assert where.endswith(".npy") and np.load(where, mmap_mode="r").shape == (24, side, side, 3)
    info = fine_tune(backbone, data, config, tmp_path, progress=False)
    assert info["image_cache"]["bytes"] == 24 * side * side * 3 and not list(tmp_path.glob("*.npy*"))
    assert info["epochs"][0]["images"] == 16 and info["epochs"][0]["images_per_s"] > 0


def test_a_run_is_planned_with_cheaper_head_only_epochs_and_decoding_by_loader():
    cost = TrainingCost(step_s=0.3, head_step_s=0.1, eval_s=0.05, augment_s=0.01, decode_s=0.001, n_fit=3200,
                        n_monitor=320, batch_size=32, loader="memory", workers=2)
    full, head = cost.epoch_s(), cost.epoch_s(head_only=True)
    assert full == pytest.approx(100 * 0.31 + 10 * 0.05) and head == pytest.approx(100 * 0.11 + 10 * 0.05)
    assert cost.run_s(3, 1) == pytest.approx(SETUP_S + 3520 * 0.001 / 2 + head + 2 * full)
    stream = TrainingCost(**{**cost.__dict__, "loader": "stream", "decode_s": 0.1})  # decoding is the bottleneck
    assert stream.epoch_s() == pytest.approx(3520 * 0.1 / 2) and stream.run_s(2, 0) == 2 * stream.epoch_s()
    probed = TrainingCost(**{**cost.__dict__, "head_init_images": 640, "prepare_s": 0.002})  # LP-FT's probe first
    assert probed.before_s() == pytest.approx(cost.before_s() + 640 * (0.05 / 32 + 0.002))
    assert probed.epoch_s() == pytest.approx(full + 320 * 0.002)  # the monitor images' preprocessing too


def test_the_activations_loader_is_planned_with_its_caching_before_training(colors_data):
    from headstart.training.cost import training_cost

    cost = TrainingCost(step_s=0.1, head_step_s=0.05, eval_s=0.05, augment_s=0.01, decode_s=0.001, n_fit=3200,
                        n_monitor=320, batch_size=32, loader="activations", workers=2, cache_s=0.2, views=2)
    assert cost.before_s() == pytest.approx(SETUP_S + 3520 * 0.001 / 2 + 2 * 100 * (0.2 + 0.01))
    assert cost.epoch_s() == pytest.approx(100 * 0.1 + 10 * 0.05)  # no augmentation in the epochs: it is cached
    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    measured = training_cost(backbone, read_class_folders(colors_data / "train"),
                             FineTuneConfig(unfreeze="1", loader="activations", batch_size=8, workers=0, views=1,
                                            head_init="probe"))
    assert measured.views == 1 and measured.cache_s > 0 and measured.step_s > 0 and measured.augment_s > 0
    assert measured.head_init_images == 21 and measured.prepare_s > 0  # every fit image: fewer than 2000
