"""The synthetic face worlds: reproducible, consistent labels, and oracles that read them back."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from translate.config import DataConfig
from translate.data.faces import (
    EXPRESSIONS,
    FACE_ATTRIBUTES,
    HAIR_GROUP,
    ExpressionsDataset,
    FacesDataset,
    expression_oracle,
    face_oracle,
    face_seed,
    render_expression,
    render_face,
)
from translate.errors import UserError


def config(**overrides) -> DataConfig:
    values = {"preprocess": "none", "scenes_size": 32, "scenes_count": 200}
    values.update(overrides)
    return DataConfig(**values)


def as_tensor(image: np.ndarray) -> torch.Tensor:
    """An HxWx3 uint8 image as 3xHxW in [-1, 1], as the datasets give it."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


def faces(seeds, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(render_face(seed, size) for seed in seeds))
    return torch.stack([as_tensor(image) for image in images]), torch.from_numpy(np.stack(labels))


def expressions(seeds, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(render_expression(seed, size) for seed in seeds))
    return torch.stack([as_tensor(image) for image in images]), torch.tensor(labels)


def test_names_follow_celeba():
    assert FACE_ATTRIBUTES == ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
    assert HAIR_GROUP == FACE_ATTRIBUTES[:3]
    assert len(EXPRESSIONS) >= 3 and EXPRESSIONS[0] == "neutral"


@pytest.mark.parametrize("size", [32, 64])
def test_the_same_seed_gives_the_same_face_and_another_seed_another(size):
    image, labels = render_face(7, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert labels.shape == (len(FACE_ATTRIBUTES),) and labels.dtype == np.float32
    again, labels_again = render_face(7, size)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(image, render_face(8, size)[0])
    expression_image, expression = render_expression(7, size)
    assert expression_image.shape == (size, size, 3) and expression_image.dtype == np.uint8
    assert isinstance(expression, int) and 0 <= expression < len(EXPRESSIONS)
    np.testing.assert_array_equal(expression_image, render_expression(7, size)[0])
    assert not np.array_equal(expression_image, render_expression(8, size)[0])


def test_seeds_differ_by_world_split_and_index():
    seeds = {face_seed(world, split, index) for world in (0, 1) for split in ("train", "test") for index in (0, 1)}
    assert len(seeds) == 8
    assert face_seed(0, "train", 3) == face_seed(0, "train", 3)


def test_labels_are_0_1_with_one_hair_colour_and_balanced():
    _, labels = faces(range(300), 32)
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(labels[:, :3].sum(dim=1) == 1)
    shares = labels.mean(dim=0)
    assert torch.all(shares[:3] > 0.25), shares
    assert torch.all((shares[3:] > 0.35) & (shares[3:] < 0.65)), shares
    _, drawn = expressions(range(300), 32)
    assert torch.bincount(drawn, minlength=len(EXPRESSIONS)).min() > 300 / len(EXPRESSIONS) / 2


def test_given_attributes_override_the_drawn_ones_and_keep_the_rest():
    _, drawn = render_face(5, 32)
    _, labels = render_face(5, 32, {"Blond_Hair": True, "Male": drawn[3] == 0})
    expected = drawn.copy()
    expected[:3] = [0, 1, 0]
    expected[3] = 1 - drawn[3]
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="one hair colour"):
        render_face(5, 32, {"Black_Hair": True, "Brown_Hair": True})
    with pytest.raises(ValueError, match="all were False"):
        render_face(5, 32, {name: False for name in HAIR_GROUP})
    with pytest.raises(ValueError, match="Bald"):
        render_face(5, 32, {"Bald": True})


def per_attribute_accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return dict(zip(FACE_ATTRIBUTES, (predicted == labels).float().mean(dim=0).tolist()))


@pytest.mark.parametrize("size", [32, 64])
def test_face_oracle_reads_the_true_attributes(size):
    images, labels = faces(range(1000, 1200), size)
    predicted = face_oracle(images)
    assert predicted.shape == labels.shape and predicted.dtype == torch.float32
    accuracy = per_attribute_accuracy(predicted, labels)
    assert min(accuracy.values()) >= 0.97, accuracy
    assert torch.equal(face_oracle(images.flip(-1)), predicted)


@pytest.mark.parametrize("size", [32, 64])
def test_face_oracle_reads_the_attributes_of_flipped_dataset_samples(size):
    dataset = FacesDataset(config(scenes_size=size), "train", True, list(FACE_ATTRIBUTES))
    samples = [dataset[(index, 100 + index)] for index in range(200)]
    images = torch.stack([sample["image"] for sample in samples])
    labels = torch.stack([sample["label"] for sample in samples])
    renders = [as_tensor(render_face(face_seed(0, "train", index), size)[0]) for index in range(200)]
    flipped = [torch.equal(sample["image"], render.flip(-1)) for sample, render in zip(samples, renders)]
    assert all(f or torch.equal(s["image"], r) for f, s, r in zip(flipped, samples, renders))
    assert 50 < sum(flipped) < 150
    accuracy = per_attribute_accuracy(face_oracle(images), labels)
    assert min(accuracy.values()) >= 0.97, accuracy


def test_changing_one_attribute_changes_only_its_oracle_reading():
    for seed in range(30):
        _, drawn = render_face(seed, 32)
        base = face_oracle(as_tensor(render_face(seed, 32)[0])[None])[0]
        hair = HAIR_GROUP[int(drawn[:3].argmax())]
        other_hair = HAIR_GROUP[(HAIR_GROUP.index(hair) + 1) % len(HAIR_GROUP)]
        changes = {"hair": {other_hair: True},
                   "Male": {"Male": drawn[3] == 0},
                   "Young": {"Young": drawn[4] == 0}}
        for changed, override in changes.items():
            image, labels = render_face(seed, 32, override)
            reading = face_oracle(as_tensor(image)[None])[0]
            assert torch.equal(reading, torch.from_numpy(labels)), (seed, changed)
            differs = {name for name, a, b in zip(FACE_ATTRIBUTES, base, reading) if a != b}
            expected = {hair, other_hair} if changed == "hair" else {changed}
            assert differs == expected, (seed, changed, differs)


def test_oracles_are_not_degenerate_on_blends_of_two_faces():
    """A half-and-half blend of two faces is no face; the oracles then guess, but they must not
    give one answer for everything (a constant oracle would score well on a lopsided model)."""
    for size in (32, 64):
        first, _ = faces(range(150), size)
        second, _ = faces(range(500, 650), size)
        shares = face_oracle((first + second) / 2).mean(dim=0)
        assert torch.all((shares > 0.1) & (shares < 0.9)), shares
        first, _ = expressions(range(150), size)
        second, _ = expressions(range(500, 650), size)
        counts = torch.bincount(expression_oracle((first + second) / 2), minlength=len(EXPRESSIONS))
        assert counts.min() >= 0.1 * 150, counts


@pytest.mark.parametrize("size", [32, 64])
def test_expression_oracle_reads_the_true_expression(size):
    images, labels = expressions(range(1000, 1200), size)
    predicted = expression_oracle(images)
    assert predicted.shape == (200,) and predicted.dtype == torch.int64
    for expression in range(len(EXPRESSIONS)):
        chosen = labels == expression
        accuracy = (predicted[chosen] == expression).float().mean().item()
        assert accuracy >= 0.97, (EXPRESSIONS[expression], accuracy)
    assert torch.equal(expression_oracle(images.flip(-1)), predicted)


def test_changing_the_expression_changes_only_the_mouth_and_brows():
    for seed in range(20):
        images = [render_expression(seed, 64, expression)[0] for expression in range(len(EXPRESSIONS))]
        readings = expression_oracle(torch.stack([as_tensor(image) for image in images]))
        assert readings.tolist() == list(range(len(EXPRESSIONS)))
        for image in images[1:]:
            assert (image != images[0]).any(axis=2).mean() < 0.06
    with pytest.raises(ValueError):
        render_expression(0, 32, len(EXPRESSIONS))


def test_faces_dataset_gives_the_chosen_attributes_in_order():
    dataset = FacesDataset(config(), "train", False, ["Young", "Blond_Hair"])
    assert len(dataset) == 200
    sample = dataset[(3, 11)]
    image, labels = render_face(face_seed(0, "train", 3), 32)
    assert torch.equal(sample["image"], as_tensor(image))
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert torch.equal(sample["label"], torch.from_numpy(labels[[4, 1]]))
    assert sample["label"].dtype == torch.float32
    assert sample["path"] == "faces/train/3"
    assert not torch.equal(FacesDataset(config(), "test", False, ["Young"])[3]["image"], sample["image"])
    with pytest.raises(IndexError):
        dataset[200]


def test_dataset_samples_are_reproducible_and_resized_as_configured():
    cfg = config(preprocess="resize_and_crop", load_size=72, crop_size=64)
    dataset = FacesDataset(cfg, "train", True, list(FACE_ATTRIBUTES))
    first, again = dataset[(4, 9)], dataset[(4, 9)]
    assert torch.equal(first["image"], again["image"]) and first["image"].shape == (3, 64, 64)
    crops = {dataset[(4, seed)]["image"].sum().item() for seed in range(8)}
    assert len(crops) > 1


def test_unknown_attribute_is_a_one_line_user_error_listing_the_valid_names():
    with pytest.raises(UserError) as error:
        FacesDataset(config(), "train", True, ["Male", "Smiling"])
    message = str(error.value)
    assert "\n" not in message and "Smiling" in message
    assert all(name in message for name in FACE_ATTRIBUTES)


def test_expressions_dataset_gives_one_hot_labels():
    dataset = ExpressionsDataset(config(), "train", True)
    sample = dataset[(2, 5)]
    assert sample["image"].shape == (3, 32, 32)
    assert sample["label"].dtype == torch.float32 and sample["label"].sum() == 1
    assert sample["path"] == "expressions/train/2"
    samples = [dataset[(index, index)] for index in range(200)]
    images = torch.stack([s["image"] for s in samples])
    labels = torch.stack([s["label"] for s in samples]).argmax(dim=1)
    assert (expression_oracle(images) == labels).float().mean() >= 0.97
    assert len(set(labels.tolist())) == len(EXPRESSIONS)


def test_rendering_is_fast():
    start = time.process_time()
    for seed in range(50):
        render_face(seed, 64)
        render_expression(seed, 64)
    per_image = (time.process_time() - start) / 100
    assert per_image < 0.005  # about 1.5 ms on one core
