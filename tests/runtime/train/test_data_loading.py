"""Starting on a large folder: no pixel is read before the first batch, and the file list is cached by the
folders' modification times (listed once, not at every start)."""

from __future__ import annotations

import os

import numpy as np
import torch

from ditsr_plan.runtime.train import data as data_module
from ditsr_plan.runtime.train.data import TrainingData, find_images

torch.set_num_threads(2)
SETTINGS = {"crop": 64, "scale": 4, "batch": 1, "degrade": "bicubic", "workers": 0, "strict": False}


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
    real_load, real_scan = data_module.load_image, data_module._scan
    monkeypatch.setattr(data_module, "load_image", lambda p: reads.append(p) or real_load(p))
    monkeypatch.setattr(data_module, "_scan", lambda r: scans.append(r) or real_scan(r))
    data = TrainingData("folder", {**SETTINGS, "root": str(root)}, 0)
    assert len(data) == 3450 and reads == [] and len(scans) == 1
    batch = data.batch(0)
    assert batch.hr.shape == (1, 3, 64, 64) and len(reads) == 1  # the first batch reads its one image
    again = TrainingData("folder", {**SETTINGS, "root": str(root)}, 0)
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
