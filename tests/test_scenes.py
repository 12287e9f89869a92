"""The synthetic scenes world: reproducible, exact labels, balanced classes, not trivially solved."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from translate.config import DataConfig
from translate.data.scenes import (
    SCENE_CLASSES,
    SCENE_PALETTE,
    ScenesDataset,
    colors_to_classes,
    render_scene,
    scene_seed,
)


def config(**overrides) -> DataConfig:
    values = {"preprocess": "none", "scenes_size": 64, "scenes_count": 50}
    values.update(overrides)
    return DataConfig(**values)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """An HxWx3 uint8 image as 3xHxW in [-1, 1], as the datasets give it."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


def is_palette_only(image: torch.Tensor) -> bool:
    """Every pixel of a 3xHxW image in [-1, 1] is exactly one of the palette colours."""
    rgb = torch.round((image + 1) * 127.5).to(torch.int64).flatten(1).T  # N x 3
    palette = torch.from_numpy(SCENE_PALETTE.astype(np.int64))
    return bool((rgb[:, None, :] == palette[None]).all(-1).any(-1).all())


def test_palette_is_the_cityscapes_colours_of_the_classes():
    cityscapes = {"road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
                  "vegetation": (107, 142, 35), "sky": (70, 130, 180), "car": (0, 0, 142)}
    assert 5 <= len(SCENE_CLASSES) <= 8
    assert SCENE_PALETTE.dtype == np.uint8 and SCENE_PALETTE.shape == (len(SCENE_CLASSES), 3)
    for name, colour in zip(SCENE_CLASSES, SCENE_PALETTE, strict=True):
        assert tuple(colour) == cityscapes[name]


def test_the_same_seed_gives_the_same_scene_and_another_seed_another():
    first, again, other = render_scene(7, 64), render_scene(7, 64), render_scene(8, 64)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[2], other[2])


@pytest.mark.parametrize("size", [32, 64])
def test_render_shapes_and_dtypes(size):
    photo, label, classes = render_scene(1, size)
    assert photo.shape == (size, size, 3) and photo.dtype == np.uint8
    assert label.shape == (size, size, 3) and label.dtype == np.uint8
    assert classes.shape == (size, size) and classes.dtype == np.uint8
    np.testing.assert_array_equal(label, SCENE_PALETTE[classes])


def test_train_and_test_are_different_worlds():
    assert scene_seed(0, "train", 3) != scene_seed(0, "test", 3)
    assert scene_seed(0, "train", 3) != scene_seed(1, "train", 3)
    train = ScenesDataset(config(), "train", paired=True, train=False)
    test = ScenesDataset(config(), "test", paired=True, train=False)
    other_world = ScenesDataset(config(scenes_seed=1), "train", paired=True, train=False)
    for i in range(3):
        assert not torch.equal(train[i]["A"], test[i]["A"])
        assert not torch.equal(train[i]["A"], other_world[i]["A"])
        assert torch.equal(train[i]["A"], ScenesDataset(config(), "train", True, False)[i]["A"])


@pytest.mark.parametrize("size", [32, 64])
def test_sample_shapes_dtypes_and_paths(size):
    dataset = ScenesDataset(config(scenes_size=size), "train", paired=False, train=True)
    assert len(dataset) == 50
    sample = dataset[(4, 123)]
    for side in "AB":
        assert sample[side].shape == (3, size, size) and sample[side].dtype == torch.float32
        assert sample[side].min() >= -1 and sample[side].max() <= 1
        assert sample[f"{side}_classes"].shape == (size, size)
        assert sample[f"{side}_classes"].dtype == torch.int64
    assert sample["A_path"] == "scenes/train/4"
    assert sample["B_path"].startswith("scenes/train/")
    assert sample["skipped"] == ""
    with pytest.raises(IndexError):
        dataset[50]


@pytest.mark.parametrize("overrides", [
    {},  # preprocess none: the scene as generated
    {"preprocess": "resize_and_crop", "load_size": 80, "crop_size": 64},  # resized, cropped, flipped
])
def test_label_maps_hold_only_palette_colours_and_decode_to_the_classes(overrides):
    dataset = ScenesDataset(config(**overrides), "train", paired=True, train=True)
    for key in [(0, 0), (1, 5), (2, 9), (3, 11)]:
        sample = dataset[key]
        assert is_palette_only(sample["B"])
        assert torch.equal(colors_to_classes(sample["B"]), sample["B_classes"])
        assert torch.equal(sample["A_classes"], sample["B_classes"])


def test_colors_to_classes_takes_one_image_or_a_batch():
    _, label, classes = render_scene(3, 32)
    image = as_tensor(label)
    assert torch.equal(colors_to_classes(image), torch.from_numpy(classes.astype(np.int64)))
    batch = colors_to_classes(torch.stack([image, image.flip(-1)]))
    assert batch.shape == (2, 32, 32) and batch.dtype == torch.int64
    assert torch.equal(batch[1], batch[0].flip(-1))
    # Off-palette colours go to the nearest class: a slightly brighter sky is still sky.
    sky = SCENE_CLASSES.index("sky")
    near_sky = torch.tensor(SCENE_PALETTE[sky] + 10, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1
    assert colors_to_classes(near_sky).item() == sky
    with pytest.raises(ValueError):
        colors_to_classes(torch.zeros(1, 32, 32))


def test_every_class_appears_with_a_sensible_share():
    counts = np.zeros(len(SCENE_CLASSES))
    for seed in range(40):
        counts += np.bincount(render_scene(seed, 64)[2].ravel(), minlength=len(SCENE_CLASSES))
    shares = counts / counts.sum()
    assert shares.min() > 0.03, dict(zip(SCENE_CLASSES, shares.round(3), strict=True))
    assert shares.max() < 0.5, dict(zip(SCENE_CLASSES, shares.round(3), strict=True))


def test_paired_samples_show_one_scene():
    dataset = ScenesDataset(config(flip=False), "train", paired=True, train=True)
    sample = dataset[(6, 42)]
    assert sample["A_path"] == sample["B_path"] == "scenes/train/6"
    photo, label, classes = render_scene(scene_seed(0, "train", 6), 64)
    assert torch.equal(sample["A_classes"], torch.from_numpy(classes.astype(np.int64)))
    assert torch.equal(sample["B_classes"], sample["A_classes"])
    assert torch.allclose(sample["A"], as_tensor(photo))
    assert torch.allclose(sample["B"], as_tensor(label))


def test_unpaired_b_is_another_scene_reproducible_from_the_seed():
    dataset = ScenesDataset(config(flip=False), "train", paired=False, train=True)
    first, again = dataset[(6, 42)], dataset[(6, 42)]
    for name in ("A", "B", "A_classes", "B_classes"):
        assert torch.equal(first[name], again[name])
    assert first["B_path"] == again["B_path"] != first["A_path"]
    b_paths = {dataset[(6, seed)]["B_path"] for seed in range(20)}
    assert len(b_paths) > 5 and "scenes/train/6" not in b_paths
    b_index = int(first["B_path"].rsplit("/", 1)[1])
    _, label, classes = render_scene(scene_seed(0, "train", b_index), 64)
    assert torch.equal(first["B_classes"], torch.from_numpy(classes.astype(np.int64)))
    assert torch.allclose(first["B"], as_tensor(label))
    # A stays scene 6 whichever B the seed picks.
    assert torch.equal(dataset[(6, 43)]["A"], first["A"])


def test_unpaired_evaluation_pairs_each_photo_with_its_own_labels():
    dataset = ScenesDataset(config(), "test", paired=False, train=False)
    sample = dataset[(3, 99)]
    assert sample["A_path"] == sample["B_path"]
    assert torch.equal(sample["A_classes"], sample["B_classes"])


def test_direction_b_to_a_swaps_the_sides():
    forward = ScenesDataset(config(), "train", paired=False, train=True)[(2, 7)]
    backward = ScenesDataset(config(direction="BtoA"), "train", paired=False, train=True)[(2, 7)]
    for side, other in (("A", "B"), ("B", "A")):
        assert torch.equal(backward[side], forward[other])
        assert torch.equal(backward[f"{side}_classes"], forward[f"{other}_classes"])
        assert backward[f"{side}_path"] == forward[f"{other}_path"]
    assert is_palette_only(backward["A"])


def test_photos_are_far_from_their_label_colours():
    """Reading a photo as if it were a label map (the identity "translation") scores low, so a
    model must learn the mapping to do well."""
    agree = total = 0
    for seed in range(40):
        photo, _, classes = render_scene(1000 + seed, 64)
        agree += int((colors_to_classes(as_tensor(photo)).numpy() == classes).sum())
        total += classes.size
    assert agree / total < 0.35


def test_rendering_is_fast():
    start = time.process_time()
    for seed in range(50):
        render_scene(seed, 64)
    per_scene = (time.process_time() - start) / 50
    assert per_scene < 0.02  # about 2 ms on one core; this only catches a gross slowdown
