"""Starting on a large folder: no pixel is read before the first batch, and the file list is cached by the
folders' modification times (listed once, not at every start)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ditsr_plan.runtime.train import data as data_module
from ditsr_plan.runtime.train.data import TrainingData, find_images
from ditsr_plan.settings.schemas import FolderData, PairedData

torch.set_num_threads(2)
SETTINGS = {"crop": 64, "scale": 4, "batch": 1, "workers": 0, "strict": False}


def _folder(tmp_path, count: int = 3450):
    """A DF2K-sized folder: a few large synthetic PNGs (2040 x 1356) and many small files in subfolders."""
    from PIL import Image

    root = tmp_path / "DF2K_HR"
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (1356, 2040, 3), dtype=np.uint8)
    (root / "DIV2K").mkdir(parents=True)
    (root / "Flickr2K").mkdir()
    for i in range(3):
        Image.fromarray(np.roll(big, i * 7, axis=1)).save(root / "DIV2K" / f"{i:04d}.png", compress_level=1)
    Image.new("RGB", (96, 96), (40, 90, 10)).save(root / "small.png")
    payload = (root / "small.png").read_bytes()
    (root / "small.png").unlink()
    for i in range(3, count):
        (root / "Flickr2K" / f"{i:06d}.png").write_bytes(payload)  # listing cost, not decoding cost
    return root


def test_a_large_folder_starts_without_reading_pixels_and_lists_once(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    reads, scans = [], []
    real_read, real_scan = data_module.read_pixels, data_module._scan
    monkeypatch.setattr(data_module, "read_pixels", lambda p, *a: reads.append(p) or real_read(p, *a))
    monkeypatch.setattr(data_module, "_scan", lambda r: scans.append(r) or real_scan(r))
    data = TrainingData(FolderData(**{**SETTINGS, "root": str(root)}), 0)
    assert len(data) == 3450 and reads == [] and len(scans) == 1
    batch = data.batch(0)
    assert batch.hr.shape == (1, 3, 64, 64) and len(reads) == 1  # the first batch reads its one image
    again = TrainingData(FolderData(**{**SETTINGS, "root": str(root)}), 0)
    assert len(again) == 3450 and len(scans) == 1  # the cached list, no second walk
    assert again.files == data.files


def test_the_file_list_follows_the_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"")
    (root / "y.jpg").write_bytes(b"")
    (root / "notes.txt").write_bytes(b"")
    assert [p.name for p in find_images(root)] == ["x.png", "y.jpg"]
    (root / "a" / "z.webp").write_bytes(b"")  # a new file changes its folder's mtime
    os.utime(root / "a", ns=(1, 1))  # even when the clock is coarse: a different mtime is enough
    assert [p.name for p in find_images(root)] == ["x.png", "z.webp", "y.jpg"]
    (root / "y.jpg").unlink()
    assert [p.name for p in find_images(root)] == ["x.png", "z.webp"]
    assert find_images(root) == find_images(root, cache=False)


# ---- issue #19: deep images by their range, bombs refused, crops before float, names escaped ---------


def _save(array, path, **kw):
    from PIL import Image

    Image.fromarray(array, **kw).save(path)
    return path


def test_deep_images_are_converted_by_their_real_range(tmp_path):
    from ditsr_plan.runtime.train.data import ImageError, load_image

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1))
    as_float = load_image(_save(ramp, tmp_path / "float01.tif", mode="F"))  # a float TIFF in 0..1
    assert as_float.min() == -1 and as_float.max() == 1 and as_float.shape == (3, 16, 64)
    assert load_image(_save(ramp * 255, tmp_path / "float255.tif", mode="F")).max() == 1
    wide = (np.tile(np.arange(64, dtype=np.int32), (16, 1)) * 70_000).astype(np.int32)  # 32-bit, up to 4.4e6
    as_int = load_image(_save(wide, tmp_path / "int32.tif"))
    assert as_int.min() == -1 and as_int.max() == 1 and len(as_int[0, 0].unique()) > 32  # not clipped white
    dark16 = np.full((16, 16), 200, dtype=np.uint16)  # a dark 16-bit image: 200 of 65535, not 200 of 255
    assert abs(float(load_image(_save(dark16, tmp_path / "dark16.png")).mean()) + 1) < 0.01
    nan = ramp.copy()
    nan[3, 3] = np.nan
    with pytest.raises(ImageError, match="not all finite"):
        load_image(_save(nan, tmp_path / "nan.tif", mode="F"))


def test_training_crops_before_float_and_skips_bombs(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    _save(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8), root / "big.png")
    Image.new("1", (12000, 12000)).save(root / "bomb.png")  # 17 KB declaring 144 MP
    shapes, real = [], data_module.to_tensor
    monkeypatch.setattr(data_module, "to_tensor", lambda a: shapes.append(a.shape) or real(a))
    data = TrainingData(FolderData(**{**SETTINGS, "root": str(root)}), 0)
    for step in range(8):
        assert data.batch(step).hr.shape == (1, 3, 64, 64)
    assert set(shapes) == {(64, 64, 3)}  # the 300 x 400 image is never made float whole
    assert list(data.stats.skipped) == [str(root / "bomb.png")]
    assert "12000 x 12000 = 144 MP is above the limit of 100 MP" in data.stats.skipped[str(root / "bomb.png")]


def test_paired_data_is_cropped_before_float(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    _save(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), tmp_path / "hr" / "a.png")
    _save(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), tmp_path / "lr" / "a.png")
    shapes, real = [], data_module.to_tensor
    monkeypatch.setattr(data_module, "to_tensor", lambda a: shapes.append(a.shape) or real(a))
    settings = {**SETTINGS, "hr": str(tmp_path / "hr"), "lr": str(tmp_path / "lr")}
    batch = TrainingData(PairedData(**settings), 0).batch(0)
    assert batch.hr.shape == batch.lr_up.shape == (1, 3, 64, 64)
    assert sorted(shapes) == [(16, 16, 3), (64, 64, 3)]


def test_shown_escapes_control_characters_in_file_names():
    from ditsr_plan.terminal import shown

    assert shown("plain/ünïcode name.png") == "plain/ünïcode name.png"
    assert shown("a\x1b[31mred\n\r\t.png") == "a\\x1b[31mred\\x0a\\x0d\\x09.png"
    assert shown("rtl\u202egnp.exe") == "rtl\\u202egnp.exe"  # a bidirectional override
    assert shown(b"raw\xff.png") == "raw\\xff.png"  # a byte that is not UTF-8
    assert shown(os.fsdecode(b"raw\xff.png")) == "raw\\xff.png"


def test_an_unreadable_name_is_printed_escaped_under_strict(tmp_path):
    from ditsr_plan.runtime.train.data import DataError

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "x\x1b[2Jy.png").write_bytes(b"junk")
    data = TrainingData(FolderData(**{**SETTINGS, "root": str(root), "strict": True}), 0)
    with pytest.raises(DataError) as err:
        data.batch(0)
    assert "x\\x1b[2Jy.png" in str(err.value) and "\x1b" not in str(err.value)
