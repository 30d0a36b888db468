"""Decoding every kind of image a user may have, and preprocessing identical to timm's."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from headstart.data.decode import ImageSkipped, Preprocess, open_rgb
from tests.conftest import SHARED, needs_shared

LITE0 = Preprocess.from_timm({"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "center",
                              "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3})


def test_truncated_jpeg_is_skipped(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageSkipped, match="unreadable"):
        open_rgb(path)


def test_zero_byte_file_is_skipped(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageSkipped, match="empty file"):
        open_rgb(tmp_path / "empty.jpg")


def test_non_image_is_skipped(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    with pytest.raises(ImageSkipped, match="not an image"):
        open_rgb(tmp_path / "notes.jpg")


def test_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    img.save(tmp_path / "a.png")
    out = np.asarray(open_rgb(tmp_path / "a.png"))
    assert out.shape == (8, 8, 3)
    assert tuple(out[4, 4]) == (255, 255, 255) and tuple(out[0, 0]) == (0, 0, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.save(tmp_path / "p.png", transparency=0)
    assert tuple(np.asarray(open_rgb(tmp_path / "p.png"))[0, 0]) == (10, 200, 30)
    img.save(tmp_path / "q.png", transparency=1)
    assert tuple(np.asarray(open_rgb(tmp_path / "q.png"))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_is_converted(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    r, g, b = np.asarray(open_rgb(tmp_path / "c.jpg"))[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_grayscale_is_rescaled(tmp_path):
    values = np.full((8, 8), 32896, dtype=np.uint16)  # 128 * 257: mid-gray in 16 bits
    Image.fromarray(values).save(tmp_path / "g16.png")
    out = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert out.shape == (8, 8, 3) and np.all(out == 128)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "l.jpg")
    out = np.asarray(open_rgb(tmp_path / "l.jpg")).astype(int)
    assert out.shape == (8, 8, 3) and abs(out[4, 4, 0] - 77) <= 1 and len(set(out[4, 4])) == 1


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "blue")
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left edge as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = np.asarray(open_rgb(tmp_path / "r.jpg"))
    assert out.shape == (40, 20, 3)  # upright: taller than wide
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 60  # stored left edge is now the top


def test_decompression_bomb_is_skipped(tmp_path):
    Image.new("1", (15000, 15000)).save(tmp_path / "bomb.png")  # 225 megapixels, a few kB on disk
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    with pytest.raises(ImageSkipped, match="decompression-bomb"):
        open_rgb(tmp_path / "bomb.png")


def test_large_jpeg_uses_reduced_decoding_and_keeps_size(tmp_path):
    Image.new("RGB", (2000, 1000), "green").save(tmp_path / "big.jpg")
    img = open_rgb(tmp_path / "big.jpg", min_short_side=256)
    assert min(img.size) >= 256 and img.size[0] < 2000
    assert LITE0.load(tmp_path / "big.jpg").shape == (224, 224, 3)


def _timm_reference(path, model_name="tf_efficientnet_lite0"):
    import timm

    model = timm.create_model(model_name, pretrained=False)
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    return config, transform(Image.open(path).convert("RGB")).numpy()


@pytest.mark.parametrize("size", [(300, 200), (224, 224), (97, 131), (256, 256)])
def test_preprocess_equals_timm_transform(tmp_path, size):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(tmp_path / "x.png")
    config, reference = _timm_reference(tmp_path / "x.png")
    pre = Preprocess.from_timm(config)
    ours = (pre.load(tmp_path / "x.png").astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(ours.transpose(2, 0, 1), reference, atol=1e-6)


@needs_shared
def test_preprocess_equals_timm_on_real_photos():
    for path in sorted((SHARED / "cats_vs_dogs" / "val" / "cat").iterdir())[:5]:
        config, reference = _timm_reference(path)
        ours = (Preprocess.from_timm(config).load(path).astype(np.float32) / 255 - 0.5) / 0.5
        np.testing.assert_allclose(ours.transpose(2, 0, 1), reference, atol=1e-6)
