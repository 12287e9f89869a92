"""The data layer: formats, image decoding, preprocessing, bad files, and the batch sampler."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from translate.config import DataConfig
from translate.data import build_dataset, make_loader
from translate.data.cityscapes import (CITYSCAPES_LABELS, TRAINID_COLORS, colors_to_trainids, labelids_to_colors,
                                       labelids_to_trainids)
from translate.data.folders import list_domains
from translate.data.images import BadImageError, list_images, load_image
from translate.data.sampler import GlobalBatchSampler
from translate.data.transforms import AugmentParams, sample_params, transform_classes, transform_image
from translate.errors import UserError

FACADES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "facades"

RED, GREEN, BLUE, WHITE, GRAY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (128, 128, 128)


# ---------------------------------------------------------------------------------------------
# Helpers


def save(path: Path, pixels: np.ndarray | tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Path:
    """Write an image: an HxW(x3) uint8 array, or one colour filling `size` = (w, h)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(pixels, tuple):
        Image.new("RGB", size, pixels).save(path)
    else:
        Image.fromarray(pixels).save(path)
    return path


def noise(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def as_color(t: torch.Tensor) -> tuple[int, ...]:
    """The colour of a uniform CxHxW tensor in [-1, 1], as 0..255 ints."""
    mean = ((t.flatten(1).mean(1) + 1) * 127.5).round().int()
    assert ((t - t.flatten(1).mean(1)[:, None, None]).abs() < 1e-5).all(), "image is not uniform"
    return tuple(mean.tolist())


def data_cfg(root: Path, format: str, **kw) -> DataConfig:
    values = dict(format=format, root=str(root), preprocess="none", flip=False)
    values.update(kw)
    return DataConfig(**values)


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize("mode, train, size, expected_hw", [
    ("resize_and_crop", True, (50, 40), (32, 32)),
    ("resize_and_crop", False, (50, 40), (32, 32)),
    ("crop", True, (50, 40), (32, 32)),
    ("crop", False, (50, 40), (32, 32)),
    ("scale_width", True, (72, 40), (32, 36)),  # height 36 * 40 / 72 = 20, raised to crop_size
    ("scale_width", True, (72, 144), (72, 36)),
    ("scale_width_and_crop", True, (72, 144), (32, 32)),
    ("none", True, (51, 41), (40, 52)),  # rounded to multiples of 4
    ("none", True, (48, 40), (40, 48)),
])
def test_preprocess_modes_give_the_official_sizes(mode, train, size, expected_hw):
    cfg = DataConfig(preprocess=mode, load_size=36, crop_size=32)
    params = sample_params(cfg, size, random.Random(0), train)
    out = transform_image(Image.new("RGB", size, GRAY), params)
    assert out.shape == (3, *expected_hw) and out.dtype == torch.float32


def test_eval_params_are_fixed_and_train_params_vary():
    cfg = DataConfig(preprocess="resize_and_crop", load_size=36, crop_size=32, flip=True)
    evals = {sample_params(cfg, (50, 40), random.Random(s), False) for s in range(20)}
    assert evals == {AugmentParams(resize=(32, 32), crop=None, flip=False)}
    trains = [sample_params(cfg, (50, 40), random.Random(s), True) for s in range(40)]
    assert {p.flip for p in trains} == {True, False}
    assert len({p.crop for p in trains}) > 5
    assert all(0 <= p.crop[0] <= 4 and 0 <= p.crop[1] <= 4 and p.crop[2:] == (32, 32) for p in trains)
    crop_eval = sample_params(DataConfig(preprocess="crop", crop_size=32), (50, 40), random.Random(3), False)
    assert crop_eval == AugmentParams(resize=None, crop=(0, 0, 32, 32), flip=False)


def test_values_flip_and_crop():
    img = np.zeros((4, 6, 3), np.uint8)
    img[:, :3] = RED
    img[:, 3:] = WHITE
    pil = Image.fromarray(img)
    plain = transform_image(pil, AugmentParams(None, None, False))
    assert plain[:, 0, 0].tolist() == [1.0, -1.0, -1.0] and plain[:, 0, 5].tolist() == [1.0, 1.0, 1.0]
    flipped = transform_image(pil, AugmentParams(None, None, True))
    assert torch.equal(flipped, plain.flip(-1))
    cropped = transform_image(pil, AugmentParams(None, (2, 1, 2, 3), False))
    assert torch.equal(cropped, plain[:, 1:4, 2:4])
    assert transform_image(pil, AugmentParams(None, None, False), grayscale=True).shape == (1, 4, 6)


def test_crop_larger_than_the_image_is_a_user_error():
    with pytest.raises(UserError, match="crop_size=64"):
        sample_params(DataConfig(preprocess="crop", crop_size=64), (50, 40), random.Random(0), True)


def test_class_maps_follow_the_image_geometry():
    classes = np.random.default_rng(1).integers(0, 20, (40, 50)).astype(np.uint8)
    img = Image.fromarray(classes * 10)  # each class its own grey level
    cfg = DataConfig(preprocess="crop", crop_size=32, flip=True)
    for seed in range(6):
        params = sample_params(cfg, img.size, random.Random(seed), True)
        image_classes = (as_uint8(transform_image(img, params, grayscale=True))[:, :, 0] // 10)
        out = transform_classes(classes, params)
        assert out.dtype == torch.int64 and out.shape == (32, 32)
        assert np.array_equal(out.numpy(), image_classes)
    resized = transform_classes(np.full((40, 50), 255, np.uint8), AugmentParams((13, 7), None, False))
    assert resized.shape == (7, 13) and set(resized.unique().tolist()) == {255}


# ---------------------------------------------------------------------------------------------
# Reading files


def test_list_images_is_sorted_recursive_and_filters_extensions(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.webp", "notes.txt", "sub/d.Tiff"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, "test layout")]
    assert found == ["a.JPG", "b.png", "sub/c.webp", "sub/d.Tiff"]


def test_missing_or_empty_folder_names_folder_and_layout(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope'} does not exist.*LAYOUT TEXT"):
        list_images(tmp_path / "nope", "LAYOUT TEXT")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=f"no images .* in {tmp_path / 'empty'}; expected the layout LAYOUT TEXT"):
        list_images(tmp_path / "empty", "LAYOUT TEXT")


def test_modes_are_converted_to_rgb(tmp_path):
    gray = Image.new("L", (4, 4), 100)
    gray.save(tmp_path / "l.png")
    Image.new("LA", (4, 4), (50, 0)).save(tmp_path / "la.png")
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "bit.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    expected = {"l.png": (100, 100, 100), "la.png": (50, 50, 50), "rgba.png": (10, 20, 30),
                "bit.png": (255, 255, 255), "cmyk.tif": (255, 0, 0), "p.png": (200, 100, 50)}
    for name, color in expected.items():
        img = load_image(tmp_path / name)
        assert img.mode == "RGB", name
        assert tuple(np.asarray(img)[0, 0]) == color, name
    assert load_image(tmp_path / "rgba.png", grayscale=True).mode == "L"


def test_16_and_32_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1028, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "g32.tif")
    for name in ["g16.png", "g32.tif"]:
        img = load_image(tmp_path / name)
        assert img.mode == "RGB"
        assert np.asarray(img)[0, :, 0].tolist() == [0, 4, 128, 255], name


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = save(tmp_path / "good.png", noise(32, 32))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return {"missing": tmp_path / "missing.png", "empty": tmp_path / "empty.png", "truncated": truncated,
            "not an image": tmp_path / "text.jpg", "corrupt": tmp_path / "garbage.png"}


@pytest.mark.parametrize("kind, reason", [("missing", "does not exist"), ("empty", "is empty"),
                                          ("truncated", "damaged"), ("not an image", "not an image"),
                                          ("corrupt", "")])
def test_bad_files_raise_bad_image_error_naming_the_file(tmp_path, kind, reason):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(BadImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert str(path) in message and reason in message and "\n" not in message
    assert caught.value.path == path


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = save(tmp_path / "big.png", GRAY, (64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between the limit and twice it: a warning in PIL
    with pytest.raises(BadImageError, match="more than 3000 pixels"):
        load_image(path)


# ---------------------------------------------------------------------------------------------
# unaligned


def make_unaligned(root: Path, a_colors, b_colors, split: str = "train") -> None:
    for i, c in enumerate(a_colors):
        save(root / f"{split}A" / f"{i}.png", c)
    for i, c in enumerate(b_colors):
        save(root / f"{split}B" / f"{i}.png", c)


def test_unaligned_reads_a_by_index_and_b_at_random_from_the_seed(tmp_path):
    a_colors, b_colors = [RED, GREEN, BLUE], [WHITE, GRAY]
    make_unaligned(tmp_path, a_colors, b_colors)
    ds = build_dataset(data_cfg(tmp_path, "unaligned"), "train", paired=False, train=True)
    assert len(ds) == 3
    for index, color in enumerate(a_colors):
        sample = ds[index, 1234]
        assert as_color(sample["A"]) == color and sample["A_path"].endswith(f"trainA/{index}.png")
        assert as_color(sample["B"]) in b_colors and sample["skipped"] == ""
    b_paths = [ds[0, seed]["B_path"] for seed in range(30)]
    assert len(set(b_paths)) == 2  # random
    assert [ds[0, seed]["B_path"] for seed in range(30)] == b_paths  # and reproducible
    assert ds[2]["B_path"] == ds[2, 2]["B_path"]  # a plain index is its own seed

    evaluation = build_dataset(data_cfg(tmp_path, "unaligned"), "train", paired=False, train=False)
    assert [as_color(evaluation[i, 99]["B"]) for i in range(3)] == [WHITE, GRAY, WHITE]  # serial in eval


def test_direction_swaps_everything(tmp_path):
    make_unaligned(tmp_path, [RED], [BLUE])
    sample = build_dataset(data_cfg(tmp_path, "unaligned", direction="BtoA"), "train", False, True)[0]
    assert as_color(sample["A"]) == BLUE and as_color(sample["B"]) == RED
    assert sample["A_path"].endswith("trainB/0.png") and sample["B_path"].endswith("trainA/0.png")


def test_unaligned_max_size_and_missing_folders(tmp_path):
    make_unaligned(tmp_path, [RED, GREEN, BLUE], [WHITE, GRAY])
    assert len(build_dataset(data_cfg(tmp_path, "unaligned", max_size=2), "train", False, True)) == 2
    with pytest.raises(UserError, match=f"{tmp_path / 'testA'} does not exist.*ROOT/testA, ROOT/testB"):
        build_dataset(data_cfg(tmp_path, "unaligned"), "test", False, True)
    with pytest.raises(UserError, match="data.root is not set"):
        build_dataset(DataConfig(format="unaligned"), "train", False, True)


def test_paired_folders_share_crop_and_flip(tmp_path):
    for i in range(3):
        img = noise(40, 30, seed=i)
        save(tmp_path / "trainA" / f"{i}.png", img)
        save(tmp_path / "trainB" / f"{i}.png", img)
    cfg = data_cfg(tmp_path, "unaligned", preprocess="resize_and_crop", load_size=36, crop_size=24, flip=True)
    ds = build_dataset(cfg, "train", paired=True, train=True)
    crops = set()
    for seed in range(8):
        sample = ds[1, seed]
        assert sample["A"].shape == (3, 24, 24)
        assert torch.equal(sample["A"], sample["B"])
        assert sample["A_path"].endswith("trainA/1.png") and sample["B_path"].endswith("trainB/1.png")
        crops.add(sample["A"].sum().item())
    assert len(crops) > 1  # the augmentation does vary with the seed


def test_paired_folders_match_names_across_extensions(tmp_path):
    save(tmp_path / "trainA" / "x.png", RED)
    save(tmp_path / "trainB" / "x.jpg", BLUE)
    sample = build_dataset(data_cfg(tmp_path, "unaligned"), "train", paired=True, train=True)[0]
    assert sample["B_path"].endswith("x.jpg") and as_color(sample["A"]) == RED


def test_paired_folders_missing_partner_or_size_mismatch(tmp_path):
    save(tmp_path / "trainA" / "1.png", RED)
    save(tmp_path / "trainA" / "2.png", RED)
    save(tmp_path / "trainB" / "1.png", BLUE, (8, 12))
    save(tmp_path / "trainB" / "3.png", BLUE)
    with pytest.raises(UserError) as caught:
        build_dataset(data_cfg(tmp_path, "unaligned"), "train", paired=True, train=True)
    message = str(caught.value)
    assert str(tmp_path / "trainA" / "2") in message and str(tmp_path / "trainB" / "3") in message
    assert "\n" not in message
    (tmp_path / "trainA" / "2.png").unlink()
    (tmp_path / "trainB" / "3.png").unlink()
    ds = build_dataset(data_cfg(tmp_path, "unaligned"), "train", paired=True, train=True)
    with pytest.raises(UserError, match=r"trainA/1.png is 8x8.*trainB/1.png is 8x12"):
        ds[0]


def test_bad_files_error_or_skip(tmp_path):
    make_unaligned(tmp_path, [RED, GREEN, BLUE], [WHITE])
    bad = tmp_path / "trainA" / "1.png"
    bad.write_bytes(b"broken")
    with pytest.raises(BadImageError, match=str(bad)):
        build_dataset(data_cfg(tmp_path, "unaligned"), "train", False, True)[1]

    ds = build_dataset(data_cfg(tmp_path, "unaligned", on_bad_file="skip"), "train", False, True)
    sample = ds[1]
    assert as_color(sample["A"]) == BLUE and sample["A_path"].endswith("trainA/2.png")
    assert sample["skipped"] == str(bad)
    assert ds[0]["skipped"] == ""

    (tmp_path / "trainB" / "0.png").write_bytes(b"")
    with pytest.raises(UserError, match="all 1 B images .* unreadable"):
        ds[0]


def test_skip_in_pairs_skips_the_whole_pair(tmp_path):
    for i in range(3):
        save(tmp_path / "trainA" / f"{i}.png", [RED, GREEN, BLUE][i])
        save(tmp_path / "trainB" / f"{i}.png", [RED, GREEN, BLUE][i])
    (tmp_path / "trainB" / "2.png").write_bytes(b"")
    ds = build_dataset(data_cfg(tmp_path, "unaligned", on_bad_file="skip"), "train", paired=True, train=True)
    sample = ds[2]
    assert sample["A_path"].endswith("trainA/0.png") and sample["B_path"].endswith("trainB/0.png")
    assert sample["skipped"] == str(tmp_path / "trainB" / "2.png")


# ---------------------------------------------------------------------------------------------
# aligned


def make_aligned(folder: Path, pairs) -> None:
    for i, (left, right) in enumerate(pairs):
        img = np.zeros((16, 32, 3), np.uint8)
        img[:, :16], img[:, 16:] = left, right
        save(folder / f"{i}.png", img)


def test_aligned_splits_left_and_right(tmp_path):
    make_aligned(tmp_path / "train", [(RED, BLUE), (GREEN, WHITE)])
    ds = build_dataset(data_cfg(tmp_path, "aligned"), "train", paired=True, train=True)
    assert len(ds) == 2
    sample = ds[1]
    assert sample["A"].shape == (3, 16, 16)
    assert as_color(sample["A"]) == GREEN and as_color(sample["B"]) == WHITE
    assert sample["A_path"] == sample["B_path"] == str(tmp_path / "train" / "1.png")
    swapped = build_dataset(data_cfg(tmp_path, "aligned", direction="BtoA"), "train", True, True)[1]
    assert as_color(swapped["A"]) == WHITE and as_color(swapped["B"]) == GREEN


def test_aligned_paired_halves_get_the_same_augmentation(tmp_path):
    half = noise(20, 18)
    save(tmp_path / "train" / "0.png", np.concatenate([half, half, half[:, :1]], axis=1))  # odd width 41
    cfg = data_cfg(tmp_path, "aligned", preprocess="resize_and_crop", load_size=20, crop_size=16, flip=True)
    ds = build_dataset(cfg, "train", paired=True, train=True)
    for seed in range(6):
        sample = ds[0, seed]
        assert sample["A"].shape == (3, 16, 16) and torch.equal(sample["A"], sample["B"])


def test_aligned_unpaired_takes_b_from_another_image(tmp_path):
    make_aligned(tmp_path / "train", [(RED, BLUE), (GREEN, WHITE), (GRAY, GRAY)])
    ds = build_dataset(data_cfg(tmp_path, "aligned"), "train", paired=False, train=True)
    b_colors = {as_color(ds[0, seed]["B"]) for seed in range(30)}
    assert b_colors == {WHITE, GRAY}
    assert as_color(ds[0, 5]["A"]) == RED
    with pytest.raises(UserError, match=r"test does not exist.*aligned: ROOT/train/\*.jpg"):
        build_dataset(data_cfg(tmp_path, "aligned"), "test", True, True)


def test_holdout_sets_the_last_training_samples_apart(tmp_path):
    colours = [(RED, BLUE), (GREEN, WHITE), (GRAY, GRAY), (BLUE, RED)]
    make_aligned(tmp_path / "train", colours)
    cfg = data_cfg(tmp_path, "aligned", holdout=1)
    train, holdout = (build_dataset(cfg, split, paired=True, train=True) for split in ("train", "holdout"))
    assert [as_color(train[i]["A"]) for i in range(len(train))] == [RED, GREEN, GRAY]
    assert len(holdout) == 1 and holdout[0]["A_path"] == str(tmp_path / "train" / "3.png")
    everything = build_dataset(data_cfg(tmp_path, "aligned"), "train", paired=True, train=True)
    assert torch.equal(holdout[0, 7]["B"], everything[3, 7]["B"])  # the same sample
    with pytest.raises(IndexError):
        holdout[1]
    with pytest.raises(UserError, match="data.holdout=4 leaves nothing to train on: the train split has 4"):
        build_dataset(data_cfg(tmp_path, "aligned", holdout=4), "train", True, True)
    with pytest.raises(UserError, match="set data.holdout=N"):
        build_dataset(data_cfg(tmp_path, "aligned"), "holdout", True, False)


@pytest.mark.skipif(not (FACADES / "train").is_dir(),
                    reason="real facades not found at ../shared/data/facades (optional test data)")
def test_real_facades_through_the_aligned_format():
    cfg = DataConfig(format="aligned", root=str(FACADES), preprocess="none", flip=False, max_size=3)
    ds = build_dataset(cfg, "train", paired=True, train=False)
    assert len(ds) == 3
    for i in range(3):
        sample = ds[i]
        with Image.open(sample["A_path"]) as img:
            source = np.asarray(img.convert("RGB"))
        assert source.shape == (256, 512, 3)
        assert sample["A"].shape == sample["B"].shape == (3, 256, 256)
        assert np.array_equal(as_uint8(sample["A"]), source[:, :256])
        assert np.array_equal(as_uint8(sample["B"]), source[:, 256:])


# ---------------------------------------------------------------------------------------------
# folders


def test_domain_folders(tmp_path):
    for i in range(2):
        save(tmp_path / "cats" / f"{i}.png", RED)
        save(tmp_path / "dogs" / f"{i}.png", BLUE)
    save(tmp_path / "dogs" / "2.png", BLUE)
    assert list_domains(tmp_path) == ["cats", "dogs"]
    ds = build_dataset(data_cfg(tmp_path, "folders", domains=["cats", "dogs"]), "train", False, True)
    assert len(ds) == 3
    sample = ds[0, 7]
    assert as_color(sample["A"]) == RED and as_color(sample["B"]) == BLUE
    with pytest.raises(UserError, match="cats, dogs"):
        build_dataset(data_cfg(tmp_path, "folders", domains=["cats"]), "train", False, True)
    with pytest.raises(UserError, match="no pairs"):
        build_dataset(data_cfg(tmp_path, "folders", domains=["cats", "dogs"]), "train", True, True)


def test_domain_folders_under_split_folders(tmp_path):
    save(tmp_path / "train" / "x" / "0.png", RED)
    save(tmp_path / "train" / "y" / "0.png", GREEN)
    save(tmp_path / "test" / "x" / "0.png", BLUE)
    save(tmp_path / "test" / "y" / "0.png", WHITE)
    assert list_domains(tmp_path, "test") == ["x", "y"]
    sample = build_dataset(data_cfg(tmp_path, "folders", domains=["x", "y"]), "test", False, False)[0]
    assert as_color(sample["A"]) == BLUE and as_color(sample["B"]) == WHITE


# ---------------------------------------------------------------------------------------------
# cityscapes


SCENE_IDS = np.array([[7, 7, 26, 26], [24, 24, 0, 0], [23, 23, 33, 33], [9, 9, 11, 11]], dtype=np.uint8)


def make_cityscapes(root: Path, split: str = "train") -> None:
    for city, stems in [("aachen", ["aachen_000000_000019"]), ("bremen", ["bremen_000001_000019"])]:
        for k, stem in enumerate(stems):
            ids = np.roll(SCENE_IDS, k + (city == "bremen"), axis=0).repeat(2, 0).repeat(2, 1)  # 8x8
            save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", noise(8, 8, seed=len(city)))
            label = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            label.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids).save(label)
            save(label.with_name(f"{stem}_gtFine_color.png"), GRAY)  # present in the real zips, not read


def test_cityscapes_label_table_is_the_official_one():
    ids = [lb.id for lb in CITYSCAPES_LABELS]
    assert ids == list(range(34)) + [-1]
    assert CITYSCAPES_LABELS[-1].name == "license plate"
    assert TRAINID_COLORS.shape == (19, 3)
    assert TRAINID_COLORS[0].tolist() == [128, 64, 128] and TRAINID_COLORS[13].tolist() == [0, 0, 142]
    assert labelids_to_trainids(np.array([[7, 26, 0, 33]])).tolist() == [[0, 13, 255, 18]]
    assert labelids_to_colors(np.array([[24]]))[0, 0].tolist() == [220, 20, 60]


def test_cityscapes_reads_photo_label_colours_and_train_ids(tmp_path):
    make_cityscapes(tmp_path)
    ds = build_dataset(data_cfg(tmp_path, "cityscapes"), "train", paired=True, train=True)
    assert len(ds) == 2
    sample = ds[0]
    photo = np.asarray(load_image(Path(sample["A_path"])))
    assert np.array_equal(as_uint8(sample["A"]), photo)
    with Image.open(sample["B_path"]) as label:
        ids = np.asarray(label)
    colors = {lb.id: lb.color for lb in CITYSCAPES_LABELS}
    expected = np.array([[colors[i] for i in row] for row in ids], dtype=np.uint8)
    assert np.array_equal(as_uint8(sample["B"]), expected)
    train_ids = {lb.id: lb.train_id for lb in CITYSCAPES_LABELS}
    expected_classes = np.vectorize(train_ids.get)(ids)
    assert sample["A_classes"].dtype == torch.int64
    assert np.array_equal(sample["A_classes"].numpy(), expected_classes)
    assert torch.equal(sample["A_classes"], sample["B_classes"])
    # Evaluation reads generated label maps back by nearest colour: B gives its classes again.
    recovered = colors_to_trainids(sample["B"].unsqueeze(0))[0]
    known = sample["B_classes"] != 255
    assert torch.equal(recovered[known], sample["B_classes"][known])


def test_cityscapes_crop_and_flip_keep_labels_aligned(tmp_path):
    make_cityscapes(tmp_path)
    cfg = data_cfg(tmp_path, "cityscapes", preprocess="resize_and_crop", load_size=12, crop_size=8, flip=True)
    ds = build_dataset(cfg, "train", paired=True, train=True)
    for seed in range(5):
        sample = ds[1, seed]
        recovered = colors_to_trainids(sample["B"])
        known = sample["A_classes"] != 255
        assert torch.equal(recovered[known], sample["A_classes"][known])
    unpaired = build_dataset(cfg, "train", paired=False, train=True)[0, 3]
    assert unpaired["A_classes"].shape == unpaired["B_classes"].shape == (8, 8)


def test_cityscapes_test_split_reads_val(tmp_path):
    make_cityscapes(tmp_path, "val")
    ds = build_dataset(data_cfg(tmp_path, "cityscapes"), "test", paired=True, train=False)
    assert "/leftImg8bit/val/" in ds[0]["A_path"]


def test_cityscapes_missing_or_incomplete(tmp_path):
    with pytest.raises(UserError, match="Cityscapes not found at .*leftImg8bit_trainvaltest.zip"):
        build_dataset(data_cfg(tmp_path, "cityscapes"), "train", True, True)
    make_cityscapes(tmp_path)
    label = next((tmp_path / "gtFine").rglob("*_labelIds.png"))
    label.unlink()
    with pytest.raises(UserError, match=f"has no label file {label}"):
        build_dataset(data_cfg(tmp_path, "cityscapes"), "train", True, True)


# ---------------------------------------------------------------------------------------------
# Sampler and loader


def epoch_keys(sampler: GlobalBatchSampler, epoch: int) -> list[list[tuple[int, int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_one_process_batch_2_equals_two_processes_batch_1():
    single = epoch_keys(GlobalBatchSampler(11, 2, seed=5), 3)
    ranks = [epoch_keys(GlobalBatchSampler(11, 2, seed=5, rank=r, world_size=2), 3) for r in range(2)]
    assert len(single) == 5 and all(len(b) == 2 for b in single)
    assert single == [r0 + r1 for r0, r1 in zip(*ranks)]
    indices = [k[0] for b in single for k in b]
    assert len(set(indices)) == 10  # a permutation, the last odd sample dropped


def test_resume_mid_epoch_gives_the_tail_and_epochs_differ():
    full = epoch_keys(GlobalBatchSampler(12, 3, seed=1), 2)
    resumed = GlobalBatchSampler(12, 3, seed=1, start_epoch=2, start_batch=3)
    assert len(resumed) == 1 and list(resumed) == full[3:]
    assert epoch_keys(resumed, 3) == epoch_keys(GlobalBatchSampler(12, 3, seed=1), 3)  # later epochs whole
    assert epoch_keys(GlobalBatchSampler(12, 3, seed=1), 1) != full
    assert epoch_keys(GlobalBatchSampler(12, 3, seed=2), 2) != full
    assert GlobalBatchSampler(12, 3, seed=1).batches_per_epoch == 4


def test_sampler_without_drop_last_and_errors():
    assert [len(b) for b in GlobalBatchSampler(5, 2, 0, drop_last=False, shuffle=False)] == [2, 2, 1]
    ranks = [list(GlobalBatchSampler(5, 4, 0, rank=r, world_size=2, drop_last=False)) for r in range(2)]
    assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]] == [2, 2]
    with pytest.raises(UserError, match="multiple of 2"):
        GlobalBatchSampler(10, 3, 0, world_size=2)
    with pytest.raises(UserError, match="fewer than one batch"):
        GlobalBatchSampler(3, 4, 0)


def test_loader_batches_are_the_same_with_or_without_workers(tmp_path):
    make_unaligned(tmp_path, [RED, GREEN, BLUE, WHITE], [GRAY, BLUE, GREEN])
    cfg = data_cfg(tmp_path, "unaligned", preprocess="crop", crop_size=6, flip=True)
    ds = build_dataset(cfg, "train", paired=False, train=True)
    batches = {}
    for workers in (0, 2):
        loader = make_loader(ds, GlobalBatchSampler(len(ds), 2, seed=0), workers, pin_memory=False)
        batches[workers] = list(loader)
    assert len(batches[0]) == 2
    for b0, b2 in zip(batches[0], batches[2]):
        assert b0["A"].shape == (2, 3, 6, 6) and isinstance(b0["A_path"], list)
        assert b0["skipped"] == ["", ""]
        assert torch.equal(b0["A"], b2["A"]) and b0["B_path"] == b2["B_path"]


def test_bad_file_in_a_worker_keeps_a_one_line_error(tmp_path):
    make_unaligned(tmp_path, [RED, GREEN], [BLUE])
    bad = tmp_path / "trainA" / "1.png"
    bad.write_bytes(b"")
    ds = build_dataset(data_cfg(tmp_path, "unaligned"), "train", paired=False, train=True)
    loader = make_loader(ds, GlobalBatchSampler(len(ds), 2, seed=0), 1, pin_memory=False)
    with pytest.raises(BadImageError) as caught:
        list(loader)
    assert str(caught.value) == f"image {bad} is empty (0 bytes); replace or delete it"


def test_unknown_format():
    with pytest.raises(UserError, match="data.format=nope"):
        build_dataset(DataConfig(format="nope", root="x"), "train", False, True)
