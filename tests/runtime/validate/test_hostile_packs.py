"""Hostile and careless input to 'pack make' and the pack reader (issue #19, items 3, 11, 16, 17 and the
pack half of the acceptance fuzz): a failure leaves nothing, unusable images are skipped and listed (or
refused with --strict), a relative HR folder works, decompression bombs and huge --size are refused before
any allocation, crops are cut before they become float, file names are printed with control characters
escaped, and no mutation of a pack folder gets anything but a plain PackError."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch

from ditsr_plan.cli import main
from ditsr_plan.runtime.train.data import DataError, TrainingData
from ditsr_plan.runtime.validate import packs
from ditsr_plan.runtime.validate.packs import PackError, load_pack, make_pack, pack_baseline
from ditsr_plan.settings.schemas import BicubicDegrade, FolderData

torch.set_num_threads(1)
BICUBIC = BicubicDegrade()


def _hr(folder, count: int = 4, size=(80, 96)):
    """``count`` small random RGB PNGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _bomb(path):
    """The issue's decompression bomb: a valid PNG of a few KB declaring 12000 x 12000 pixels."""
    from PIL import Image

    Image.new("1", (12000, 12000)).save(path)
    return path


def _left(folder):
    return sorted(p.name for p in folder.iterdir())


# ---- item 11: a relative HR folder -----------------------------------------------------------------


def test_pack_make_from_a_relative_hr_folder(tmp_path, monkeypatch, capsys):
    _hr(tmp_path / "data" / "hr")
    monkeypatch.chdir(tmp_path)
    assert main(["pack", "make", "data/hr", "packs/p", "--n", "2", "--size", "32", "--plan", _plan(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "packs" / "p" / "manifest.json").read_text())
    assert manifest["source"] == "data/hr" and manifest["n"] == 2
    assert all(not entry["source"].startswith("/") for entry in manifest["images"])
    assert len(load_pack(tmp_path / "packs" / "p", scale=4)) == 2
    assert "wrote packs/p: 2 GT 32 px" in capsys.readouterr().err


def _plan(tmp_path) -> str:
    path = tmp_path / "bicubic.plan"
    path.write_text("plan p\nsteps 10\nloss v vpred\ndata builtin\ndegrade bicubic\nstage A 0..: v 1\n")
    return str(path)


# ---- item 3: a failure leaves nothing; unusable images skipped and listed ------------------------


def test_a_crash_mid_way_leaves_nothing_and_the_retry_works(tmp_path, monkeypatch):
    hr = _hr(tmp_path / "hr")
    out = tmp_path / "new" / "deeper" / "p"  # parents created by pack make are removed again
    real, calls = packs._png, []

    def crash_on_the_third(image, path):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("injected crash")
        return real(image, path)

    monkeypatch.setattr(packs, "_png", crash_on_the_third)
    with pytest.raises(RuntimeError, match="injected crash"):
        make_pack(hr, out, BICUBIC, n=3, size=32)
    assert _left(tmp_path) == ["hr"]  # no OUT, no parents, no temporary folder
    monkeypatch.setattr(packs, "_png", lambda image, path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        make_pack(hr, tmp_path / "p", BICUBIC, n=3, size=32)
    assert _left(tmp_path) == ["hr"]
    monkeypatch.setattr(packs, "_png", real)
    assert main(["pack", "make", str(hr), str(out), "--n", "3", "--size", "32"]) == 0  # the retry is not refused
    assert _left(out) == ["gt", "lq", "manifest.json"] and len(_left(out / "gt")) == 3
    assert _left(out.parent) == ["p"]


def test_a_full_disk_is_a_plain_error_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    hr = _hr(tmp_path / "hr")

    def full(image, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(packs, "save_png", full)
    assert main(["pack", "make", str(hr), str(tmp_path / "p"), "--n", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "nothing was written" in err and "Traceback" not in err
    assert _left(tmp_path) == ["hr"]


def test_unusable_images_are_skipped_and_listed_and_strict_refuses(tmp_path, capsys):
    hr = _hr(tmp_path / "hr", count=3)
    (hr / "broken.png").write_bytes(b"\x89PNG not really")
    (hr / "empty.jpg").write_bytes(b"")
    full = (hr / "img0.png").read_bytes()
    (hr / "truncated.png").write_bytes(full[: len(full) // 3])
    _bomb(hr / "bomb.png")
    os.mkfifo(hr / "fifo.png")  # opening it would block forever
    assert main(["pack", "make", str(hr), str(tmp_path / "p"), "--n", "8", "--size", "32"]) == 0
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["n"] == 3 and sorted(e["source"] for e in manifest["images"]) == [
        "img0.png",
        "img1.png",
        "img2.png",
    ]
    assert sorted(manifest["skipped"]) == ["bomb.png", "broken.png", "empty.jpg", "fifo.png", "truncated.png"]
    assert "not a regular file" in manifest["skipped"]["fifo.png"]
    err = capsys.readouterr().err
    assert "pack: skipping broken.png" in err and "5 unusable images skipped" in err
    assert main(["pack", "make", str(hr), str(tmp_path / "q"), "--n", "8", "--size", "32", "--strict"]) == 2
    assert "(--strict)" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() and _left(tmp_path) == ["hr", "p"]


def test_a_folder_of_only_unusable_images_is_refused(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    (hr / "a.png").write_bytes(b"junk")
    (hr / "b.png").write_bytes(b"")
    assert main(["pack", "make", str(hr), str(tmp_path / "p"), "--n", "2", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "no usable image" in err and "a.png" in err and "b.png" in err
    assert _left(tmp_path) == ["hr"]


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    hr = _hr(tmp_path / "hr", count=1)
    (tmp_path / "p").write_text("mine")
    assert main(["pack", "make", str(hr), str(tmp_path / "p"), "--n", "1", "--size", "32"]) == 2
    assert "is not a folder" in capsys.readouterr().err and (tmp_path / "p").read_text() == "mine"


# ---- item 16: bounded resources ---------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    hr = tmp_path / "hr"
    hr.mkdir()
    _bomb(hr / "bomb.png")
    assert (hr / "bomb.png").stat().st_size < 150_000
    real = PngImagePlugin.PngImageFile.load

    def load(self):
        assert self.size != (12000, 12000), "the bomb was decoded"
        return real(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    with pytest.raises(PackError, match=r"bomb\.png \(12000 x 12000 = 144 MP is above the limit of 100 MP"):
        make_pack(hr, tmp_path / "p", BICUBIC, n=1, size=32)
    with pytest.raises(PackError, match=r"cannot use bomb\.png: 12000 x 12000 = 144 MP"):
        make_pack(hr, tmp_path / "p", BICUBIC, n=1, size=32, strict=True)
    # training's data reading uses the same limit: skipped and counted, or an error naming it
    _hr(hr, count=1)
    settings = {"crop": 32, "scale": 4, "batch": 1, "degrade": "bicubic", "workers": 0, "strict": False}
    data = TrainingData(FolderData(**{**settings, "root": str(hr)}), 0)
    for step in range(6):
        data.batch(step)
    assert list(data.stats.skipped) == [str(hr / "bomb.png")]
    assert "144 MP is above the limit" in data.stats.skipped[str(hr / "bomb.png")]
    strict = TrainingData(FolderData(**{**settings, "root": str(hr), "strict": True, "max_pixels": 10_000_000}), 0)
    with pytest.raises(DataError, match=r"bomb\.png: 12000 x 12000 = 144 MP is above the limit of 10 MP"):
        for step in range(6):
            strict.batch(step)


def test_the_pixel_limit_is_a_setting(tmp_path, capsys):
    hr = _hr(tmp_path / "hr", count=2, size=(100, 100))
    args = ["pack", "make", str(hr), "--n", "2", "--size", "32"]
    assert main([*args[:3], str(tmp_path / "p"), *args[3:], "--max-pixels", "9999", "--strict"]) == 2
    assert "100 x 100 = 10000 pixels is above the limit of 9999 pixels" in capsys.readouterr().err
    assert main([*args[:3], str(tmp_path / "q"), *args[3:], "--max-pixels", "10000", "--strict"]) == 0
    assert main([*args[:3], str(tmp_path / "r"), *args[3:], "--max-pixels", "0"]) == 2


def test_size_is_bounded_by_the_images(tmp_path, capsys):
    hr = _hr(tmp_path / "hr", count=2, size=(80, 96))
    _bomb(hr / "bomb.png")  # above the pixel limit: not counted as available
    assert main(["pack", "make", str(hr), str(tmp_path / "p"), "--size", "40000"]) == 2
    err = capsys.readouterr().err
    assert "--size 40000 is larger than every image (the largest crop available is 80: give --size 80 or less)" in err
    assert _left(tmp_path) == ["hr"]


def test_a_thin_strip_is_not_upscaled_into_gigapixels(tmp_path):
    from PIL import Image

    hr = _hr(tmp_path / "hr", count=1, size=(64, 64))
    Image.new("RGB", (20000, 4), (9, 9, 9)).save(hr / "strip.png")  # 80k pixels; x16 to a 64 crop: 20 MP
    manifest = make_pack(hr, tmp_path / "p", BICUBIC, n=2, size=64, max_pixels=1_000_000)
    assert manifest["n"] == 1 and "once upscaled to the crop 64" in manifest["skipped"]["strip.png"]


def test_crops_are_cut_before_they_become_float(tmp_path, monkeypatch):
    hr = _hr(tmp_path / "hr", count=2, size=(300, 400))
    shapes, real = [], packs.to_tensor
    monkeypatch.setattr(packs, "to_tensor", lambda array: shapes.append(array.shape) or real(array))
    make_pack(hr, tmp_path / "p", BICUBIC, n=2, size=32)
    assert shapes == [(32, 32, 3), (32, 32, 3)]


# ---- item 17: deep images by their range; names escaped ----------------------------------------------


def test_a_float_tiff_in_0_1_makes_a_pack_that_is_not_black(tmp_path):
    from PIL import Image

    hr = tmp_path / "hr"
    hr.mkdir()
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    Image.fromarray(ramp, mode="F").save(hr / "float.tif")
    make_pack(hr, tmp_path / "p", BICUBIC, n=1, size=64)
    (image,) = load_pack(tmp_path / "p", scale=4)
    assert image.gt.min() == -1 and image.gt.max() == 1  # the whole ramp, not an all-black GT


def test_file_names_are_printed_with_control_characters_escaped(tmp_path, capsys):
    hr = _hr(tmp_path / "hr", count=1)
    (hr / "evil\x1b[2J\rname.png").write_bytes(b"junk")
    assert main(["pack", "make", str(hr), str(tmp_path / "p"), "--n", "2", "--size", "32"]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "evil\\x1b[2J\\x0dname.png" in err
    pack = tmp_path / "p"
    (pack / "gt" / "x\x1b]0;owned\x07.png").write_bytes((pack / "gt" / _left(pack / "gt")[0]).read_bytes())
    with pytest.raises(PackError) as err:
        load_pack(pack, scale=4)
    assert "x\\x1b]0;owned\\x07.png" in str(err.value) and "\x1b" not in str(err.value)


# ---- acceptance: mutation fuzz of a pack folder --------------------------------------------------------


def _random_image(rng: random.Random, path) -> None:
    """A valid image of a random size and mode (deep, float, palette, alpha, 1-bit, NaN) at ``path``."""
    from PIL import Image

    w, h = rng.choice([1, 2, 7, 8, 31, 32, 33, 64]), rng.choice([1, 4, 8, 32, 64])
    mode = rng.choice(["RGB", "L", "P", "RGBA", "1", "I;16", "I", "F", "F-nan", "CMYK"])
    values = np.random.default_rng(rng.randrange(2**32))
    if mode in ("F", "F-nan"):
        array = values.random((h, w), dtype=np.float32) * rng.choice([1, 255, 1e6, -3])
        if mode == "F-nan":
            array[0, 0] = np.nan
        image = Image.fromarray(array, mode="F")
    elif mode in ("I", "I;16"):
        dtype = np.int32 if mode == "I" else np.uint16
        image = Image.fromarray(values.integers(0, rng.choice([2, 256, 65536]), (h, w)).astype(dtype))
    else:
        image = Image.new(mode, (w, h))
    fmt = {"F": "TIFF", "F-nan": "TIFF", "I": "TIFF", "CMYK": "JPEG"}.get(mode, "PNG")
    image.save(path.with_suffix("." + fmt.lower()) if rng.random() < 0.3 else path, format=fmt)


def _mutate(rng: random.Random, pack) -> str:
    """One random mutation of one file or folder of ``pack``; returns what it did."""
    files = sorted(p for p in pack.rglob("*") if p.is_file() and not p.is_symlink())
    what = rng.choice(["truncate", "delete", "rename", "corrupt", "replace", "dir", "fifo", "link", "folder"])
    folders = [d for d in (pack / "gt", pack / "lq") if d.is_dir() and not d.is_symlink()]
    if (what == "folder" or not files) and folders:
        target = rng.choice(folders)
        action = rng.choice(["delete", "rename", "twin", "file"])
        if action == "delete":
            shutil.rmtree(target)
        elif action == "rename":
            target.rename(pack / rng.choice(["GT", "gt2", "lq_x4", "x", "lq\n", "gt.png"]))
        elif action == "twin":
            regular = lambda d, names: [n for n in names if not os.path.isfile(os.path.join(d, n))]  # noqa: E731
            shutil.copytree(target, pack / (target.name + "512"), symlinks=True, ignore=regular, dirs_exist_ok=True)
        else:
            shutil.rmtree(target)
            target.write_bytes(b"a file, not a folder")
        return f"{action} folder {target.name}"
    if not files:
        return "nothing"
    target = rng.choice(files)
    if what == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif what == "delete":
        target.unlink()
    elif what == "rename":
        name = rng.choice(["z.png", "A.PNG", "a.jpg", ".hidden.png", "b\x1b.png", "c.txt", "d.tif"])
        target.rename(rng.choice([target.parent, pack, *folders]) / name)
    elif what == "corrupt":
        data = bytearray(target.read_bytes())
        for _ in range(rng.choice([1, 4, 64])):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
    elif what == "replace":
        target.unlink()
        _random_image(rng, target)
    elif what == "dir":
        target.unlink()
        target.mkdir()
    elif what == "fifo":
        target.unlink()
        os.mkfifo(target)
    else:
        target.unlink()
        target.symlink_to(rng.choice([target, pack / "nowhere.png", pack]))
    return f"{what} {target.relative_to(pack)}"


FUZZ_CASES = int(os.environ.get("DITSR_PLAN_PACK_FUZZ_CASES", "1000"))


def test_no_mutation_of_a_pack_gets_an_internal_error(tmp_path):
    """The evaluate --pack / eval pack= reading path (load_pack with the run's scale and the model's side
    multiple, then the bicubic baseline's metrics) on FUZZ_CASES mutated packs: each loads, or is refused
    with a PackError naming the problem -- never another exception, never a hang."""
    base = tmp_path / "base"
    _hr(tmp_path / "hr", count=3, size=(64, 64))
    make_pack(tmp_path / "hr", base, BICUBIC, n=3, size=32)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(FUZZ_CASES):
        rng = random.Random(case)
        pack = tmp_path / "case"
        shutil.rmtree(pack, ignore_errors=True)
        shutil.copytree(base, pack)
        done = [_mutate(rng, pack) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        try:
            images = load_pack(pack, scale=4, multiple=rng.choice([1, 8, 32]), limit=rng.choice([None, 2]))
            pack_baseline(images, 4)
            outcomes["loaded"] += 1
        except PackError as exc:
            assert str(exc).startswith("pack ") and "\x1b" not in str(exc), (case, done, exc)
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - the failure report
            pytest.fail(f"case {case}: {done} -> internal error {type(exc).__name__}: {exc}")
    print(outcomes)
    assert outcomes["loaded"] > 0 and outcomes["refused"] > FUZZ_CASES // 4, outcomes


def test_no_mutation_of_an_hr_folder_gets_an_internal_error(tmp_path):
    """pack make on mutated HR folders: a pack (unusable images skipped and listed) or a PackError, and a
    failure leaves nothing."""
    base = _hr(tmp_path / "base", count=3, size=(40, 48))
    for case in range(FUZZ_CASES // 10):
        rng = random.Random(10_000 + case)
        hr, out = tmp_path / "hr", tmp_path / "out" / "p"
        for folder in (hr, tmp_path / "out"):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(base, hr)
        (hr / "gt").mkdir()  # _mutate's folder moves need a gt/ and an lq/
        (hr / "lq").mkdir()
        done = _mutate(rng, hr)
        try:
            manifest = make_pack(hr, out, BICUBIC, n=3, size=32, strict=rng.random() < 0.2)
            assert manifest["n"] == len(_left(out / "gt")), (case, done)
        except PackError as exc:
            assert "\x1b" not in str(exc), (case, done, exc)
            assert not (tmp_path / "out").exists() or _left(tmp_path / "out") == [], (case, done)
        except Exception as exc:  # pragma: no cover - the failure report
            pytest.fail(f"case {case}: {done} -> internal error {type(exc).__name__}: {exc}")
