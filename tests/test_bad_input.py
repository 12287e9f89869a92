"""Bad input, tried systematically: every way it can be wrong ends in a one-line UserError naming
the file or key (exit status 2 on the command line, no traceback), or in a counted skip where the
user chose data.on_bad_file=skip.

Property-based tests (hypothesis) generate overrides and damaged image files; the rest are the
cases a user meets: decompression bombs, CelebA attribute files, checkpoints of another method or
architecture, checkpoints carrying code, and translate-infer outputs that would overwrite inputs.
Cases already covered elsewhere: single bad images and image modes (test_data.py), paired folders
with missing partners (test_pix2pix.py), unknown CelebA attributes (test_stargan.py), truncated
and corrupted checkpoints (test_faults.py).
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import shutil
import string
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config, tiny_overrides
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_stargan import write_celeba

from translate import config
from translate.config import InferConfig
from translate.data import build_dataset
from translate.data.attributes import read_attribute_file
from translate.data.images import BadImageError, load_image
from translate.errors import UserError
from translate.infer import translate_folder
from translate.train import checkpoint as ckpt
from translate.train.loop import load_run_config, train


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "import sys; from translate import cli; "
                           "getattr(cli, sys.argv[1])(sys.argv[2:])", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def assert_one_line_error(r: subprocess.CompletedProcess, *names: str) -> str:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and all(n in line for n in names), line
    assert len([x for x in r.stderr.splitlines() if not x.startswith("warning: ")]) == 1, r.stderr
    return line


# ---------------------------------------------------------------------------------------------
# Recipe overrides

KEYS = config.all_keys()
KEY_TEXT = string.ascii_letters + string.digits + "._-"
keys = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k + "x"),  # misspelt
    st.sampled_from(KEYS).map(lambda k: k + ".sub"),  # a section where a value is
    st.text(KEY_TEXT, min_size=1, max_size=24),
)
values = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1e999", "-1", "0", "1", "0.5", "-0.5", "true", "no", "a,b",
                     "[1, 2]", "{}", "1_000", "99999999999999999999999", "resnet_9blocks", "AtoB", "skip"]),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "").replace("\x0c", ""),
            max_size=16),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=3))
def test_overrides_give_a_valid_config_or_a_one_line_error_naming_the_key(pairs):
    args = [f"{k}={v}" for k, v in pairs]
    try:
        cfg, _ = config.load("cyclegan_synthetic", args)
    except UserError as e:
        message = str(e)
        assert "\n" not in message
        named = {k for k, _ in pairs} | {k.rsplit(".", 1)[0] for k, _ in pairs}
        assert any(k in message for k in named), (args, message)
        return
    flat = config.to_flat(cfg)
    for key in config.POSITIVE:
        assert flat[key] > 0, key
    for key in config.NON_NEGATIVE:
        assert flat[key] >= 0, key
    for key, value in flat.items():
        if isinstance(value, float):
            assert np.isfinite(value), key
    for key, allowed in config.CHOICES.items():
        assert flat[key] in allowed


def test_non_finite_numbers_and_path_names_are_refused():
    for arg, message in (("train.lr=nan", "train.lr must be a number, got 'nan'"),
                         ("train.beta1=inf", "train.beta1 must be a number, got 'inf'"),
                         ("name=../elsewhere", "name='../elsewhere' would not be one folder under output_dir")):
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
            config.load("cyclegan_synthetic", [arg])


# ---------------------------------------------------------------------------------------------
# Image files


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (one row of data follows): opening it reads only
    the header, so a check on the claimed size must refuse it before any pixel is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 60_000])  # PIL warns above 89 M pixels and refuses above 179 M
def test_decompression_bombs_are_refused_before_decoding(tmp_path, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(side, side))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadImageError) as e:
        load_image(bomb)
    assert str(bomb) in str(e.value) and "decompression bombs" in str(e.value) and "\n" not in str(e.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100  # decoding it would take 300 MB (10,000^2 RGB) or 10 GB


def encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(out, format=fmt)
    return out.getvalue()


VALID = {"png": encoded("PNG"), "jpg": encoded("JPEG"), "bmp": encoded("BMP"), "tif": encoded("TIFF")}


@st.composite
def damaged_files(draw):
    fmt = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[fmt])
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data) - 1))]
    for _ in range(draw(st.integers(0 if len(data) else 0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return fmt, bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the damaged TIFF tags it skips
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damaged_files())
def test_damaged_image_files_load_or_raise_bad_image_error(tmp_path, damaged):
    fmt, data = damaged
    path = tmp_path / f"image.{fmt}"
    path.write_bytes(data)
    try:
        img = load_image(path)
    except BadImageError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


def mixed_folder(root: Path) -> list[Path]:
    """Domain folders A and B of 36 px images in every mode a user may have, plus four bad files in A."""
    rng = np.random.default_rng(1)
    for domain in ("A", "B"):
        (root / domain).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(root / domain / f"rgb{i}.png")
    a = root / "A"
    Image.fromarray(rng.integers(0, 65536, (36, 36), dtype=np.uint16)).save(a / "gray16.png")
    Image.new("P", (36, 36), 3).save(a / "palette.png")
    Image.new("CMYK", (36, 36), (0, 255, 255, 0)).save(a / "cmyk.tif")
    Image.new("L", (36, 36), 80).save(a / "gray.png")
    Image.new("RGBA", (36, 36), (1, 2, 3, 0)).save(a / "rgba.png")
    bad = [a / "empty.png", a / "truncated.png", a / "text.jpg", a / "bomb.png"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes((a / "rgb0.png").read_bytes()[:100])
    bad[2].write_text("not a picture")
    bad[3].write_bytes(png_header(60_000, 60_000))
    return bad


def test_skipped_files_are_counted_and_named_and_training_goes_on(tmp_path, capsys):
    bad = mixed_folder(tmp_path / "data")
    cfg = tiny_config(tmp_path, data__format="folders", data__root=tmp_path / "data", data__domains="A,B",
                      data__on_bad_file="skip", train__epochs=2, train__epochs_decay=0, train__save_every=100)
    run_dir = train(cfg, "skip")  # 13 files in A, batch 2: 6 steps an epoch, each file seen
    err = capsys.readouterr().err
    assert f"({len(bad)} so far)" in err and f"({len(bad) + 1} so far)" not in err
    assert all(str(p) in err for p in bad), err
    assert ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[0])["step"] == 12


def test_cli_bad_image_is_one_line_naming_the_file(tmp_path):
    root = tmp_path / "data"
    mixed_folder(root)
    for name in ("empty.png", "truncated.png", "text.jpg"):
        (root / "A" / name).unlink()  # only the bomb is left to fail
    r = cli("train", "recipe=cyclegan_synthetic", *tiny_overrides(tmp_path, data__format="folders",
                                                                    data__root=root, data__domains="A,B"),
            cwd=tmp_path)
    assert_one_line_error(r, str(root / "A" / "bomb.png"), "pixels")


# ---------------------------------------------------------------------------------------------
# CelebA attribute files


@pytest.mark.parametrize("edit, message", [
    (lambda lines: ["12"] + lines[1:], "says it has 12 rows but has 10"),  # rows missing at the end
    (lambda lines: lines[:5] + [lines[5].replace(" 1", " 0", 1)] + lines[6:], "line 6 (000004.jpg): "),
    (lambda lines: lines[:3] + [lines[3].replace("-1", "+2", 1)] + lines[4:], "is '+2'; the values must be 1 or -1"),
    (lambda lines: lines[:3] + [lines[3] + " 1"] + lines[4:], "line 4 should be a file name and 5 values"),
    (lambda lines: [lines[0], lines[1].replace("Male", "Young")] + lines[2:], "names the attribute Young twice"),
    (lambda lines: lines[:3] + lines[2:11], "has two rows for 000001.jpg"),
    (lambda lines: lines[1:], "should start with the row count"),
])
def test_broken_attribute_files_are_one_line_errors_naming_the_file(tmp_path, edit, message):
    write_celeba(tmp_path, 10)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(UserError) as e:
        read_attribute_file(path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_attribute_row_without_its_image_is_named_or_skipped(tmp_path):
    write_celeba(tmp_path, 6)
    (tmp_path / "images" / "000002.jpg").unlink()
    values = {"format": "celeba", "root": str(tmp_path), "attributes": ["Male"], "test_size": 0,
              "center_crop": 16, "crop_size": 8, "load_size": 8, "num_workers": 0}
    data = build_dataset(config.build(config.DataConfig, values), "train", paired=False, train=False)
    index = [p.name for p in data.paths].index("000002.jpg")
    with pytest.raises(BadImageError, match="000002.jpg does not exist"):
        data[index]
    skipping = build_dataset(config.build(config.DataConfig, {**values, "on_bad_file": "skip"}), "train",
                             paired=False, train=False)
    sample = skipping[index]
    assert sample["skipped"].endswith("000002.jpg") and not sample["path"].endswith("000002.jpg")


# ---------------------------------------------------------------------------------------------
# Checkpoints: another method, another architecture, code inside


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    return train(tiny_config(tmp, train__max_steps=2, train__save_every=1), "tiny")


def test_resume_with_a_checkpoint_of_another_method_is_refused(tmp_path, tiny_run):
    from test_faults import tiny

    other = train(tiny("pix2pix", tmp_path / "pix2pix", "train.max_steps=1"), "other")
    run_dir = tmp_path / "cyclegan"
    shutil.copytree(tiny_run, run_dir)
    shutil.copy(ckpt.list_checkpoints(other / "checkpoints")[0], run_dir / "checkpoints" / "step_00000009.pt")
    with pytest.raises(UserError, match="the checkpoint is from a pix2pix run, not cyclegan"):
        train(load_run_config(run_dir, []), "cyclegan", resume_dir=run_dir)


def test_cli_resume_with_another_architecture_is_one_line(tmp_path, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    r = cli("train", f"resume={run_dir}", "model.ngf=16", cwd=tmp_path)
    assert_one_line_error(r, "network G_A does not fit this model", "resume with the run's own config")
    assert [p.name for p in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step_00000002.pt",
                                                                                 "step_00000001.pt"]


def test_infer_with_a_checkpoint_that_does_not_fit_its_config(tmp_path, tiny_run):
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tiny_run / "checkpoints")[0])
    state["config"]["model"]["ngf"] = 16
    torch.save(state, tmp_path / "edited.pt")
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    with pytest.raises(UserError, match="network G_A does not match its own config"):
        translate_folder(InferConfig(checkpoint=str(tmp_path / "edited.pt"), input=str(tmp_path),
                                     output=str(tmp_path.parent / f"{tmp_path.name}-out"), size=32, workers=0))
    assert not (tmp_path.parent / f"{tmp_path.name}-out").exists()


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cli_infer_refuses_a_checkpoint_carrying_code(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": ckpt.FORMAT, "nets": Payload(tmp_path / "owned")}, f)
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "x.png")
    r = cli("infer", f"checkpoint={evil}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_line_error(r, str(evil), "loading never runs code from a checkpoint")
    assert not (tmp_path / "owned").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Nothing is lost: translate-infer never writes over its inputs or over its own outputs


def test_infer_refuses_outputs_that_collide_or_land_among_the_inputs(tmp_path, tiny_run):
    checkpoint = str(ckpt.list_checkpoints(tiny_run / "checkpoints")[0])
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "in" / "a.jpg")
    Image.new("RGB", (32, 32), (0, 255, 0)).save(tmp_path / "in" / "a.png")
    with pytest.raises(UserError, match=r"a\.jpg and .*a\.png would both be written to .*out/a\.png"):
        translate_folder(InferConfig(checkpoint=checkpoint, input=str(tmp_path / "in"),
                                     output=str(tmp_path / "out"), size=32, workers=0))
    assert not (tmp_path / "out").exists()

    # The input folder inside the output folder: out/in/in/x.png would be written to out/in/x.png.
    inputs = tmp_path / "out" / "in"
    (inputs / "in").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(inputs / "in" / "x.png")
    Image.new("RGB", (32, 32)).save(inputs / "x.png")
    before = (inputs / "x.png").read_bytes()
    with pytest.raises(UserError, match="inside input="):
        translate_folder(InferConfig(checkpoint=checkpoint, input=str(inputs), output=str(tmp_path / "out"),
                                     size=32, workers=0))
    assert (inputs / "x.png").read_bytes() == before
    # Without such a sub-folder, an input folder inside the output folder is fine.
    shutil.rmtree(inputs / "in")
    count, _ = translate_folder(InferConfig(checkpoint=checkpoint, input=str(inputs), output=str(tmp_path / "out"),
                                            size=32, workers=0))
    assert count == 1 and (tmp_path / "out" / "x.png").exists() and (inputs / "x.png").read_bytes() == before
