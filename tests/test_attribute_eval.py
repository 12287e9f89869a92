"""StarGAN's attribute-classification accuracy (translate/eval/attributes.py), checked against
values worked out by hand in a synthetic world whose images are their labels drawn as planes."""

from __future__ import annotations

import torch
from torch import nn

from translate.config import DataConfig
from translate.data.faces import FACE_ATTRIBUTES, FacesDataset
from translate.eval.attributes import (
    TinyClassifier,
    attribute_accuracy,
    build_classifier,
    target_labels,
    train_attribute_classifier,
)

NAMES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male"]
LABELS = torch.tensor([[1, 0, 0, 1],
                       [0, 1, 0, 0],
                       [0, 0, 1, 1],
                       [0, 0, 0, 0]], dtype=torch.float32)  # the last face has none of the hair colours


def planes(labels: torch.Tensor) -> torch.Tensor:
    """An image per label: one 4x4 plane per attribute, +1 where it holds, -1 where not."""
    return (labels * 2 - 1)[:, :, None, None].expand(-1, -1, 4, 4).clone()


class PlaneClassifier(nn.Module):
    """Exact in the plane world: the logit is the plane's mean (+1 or -1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SetTarget(nn.Module):
    """A perfect translator in the plane world: draws the target label."""

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return planes(c)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x


def plane_world(labels: torch.Tensor = LABELS) -> list[dict]:
    return [{"image": image, "label": label} for image, label in zip(planes(labels), labels)]


def test_target_labels_follow_the_official_create_labels():
    targets = target_labels(LABELS, NAMES, ("Black_Hair", "Blond_Hair", "Brown_Hair"))
    # Hair colour i: that colour set, the other colours cleared, Male kept.
    assert targets[0].tolist() == [[1, 0, 0, 1], [1, 0, 0, 0], [1, 0, 0, 1], [1, 0, 0, 0]]
    assert targets[1].tolist() == [[0, 1, 0, 1], [0, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0]]
    assert targets[2].tolist() == [[0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0]]
    # Any other attribute: flipped, the rest kept.
    assert targets[3].tolist() == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    # Without a hair group every attribute is flipped on its own.
    flipped = target_labels(LABELS, NAMES, None)
    for i in range(4):
        expected = LABELS.clone()
        expected[:, i] = 1 - expected[:, i]
        assert torch.equal(flipped[i], expected)
    assert LABELS.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]  # the input is left as it was


def test_default_hair_group_is_the_official_one_and_ignores_absent_names():
    names = ["Gray_Hair", "Young", "Blond_Hair"]
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    targets = target_labels(labels, names)  # default group: Black, Blond, Brown and Gray hair
    assert targets[0].tolist() == [[1, 1, 0]]
    assert targets[1].tolist() == [[1, 0, 0]]
    assert targets[2].tolist() == [[0, 1, 1]]


def test_a_perfect_translator_scores_one():
    table = attribute_accuracy(PlaneClassifier(), SetTarget(), plane_world(), NAMES,
                               hair_group=("Black_Hair", "Blond_Hair", "Brown_Hair"), batch_size=3)
    assert table["attribute"].tolist() == NAMES
    assert table["target_found"].tolist() == [1.0] * 4
    assert table["real_accuracy"].tolist() == [1.0] * 4
    assert table["images"].tolist() == [4] * 4


def test_an_identity_translator_scores_how_often_the_target_was_already_there():
    hair = ("Black_Hair", "Blond_Hair", "Brown_Hair")
    table = attribute_accuracy(PlaneClassifier(), Identity(), plane_world(), NAMES, hair_group=hair, batch_size=3)
    # Each hair colour is already on one face in four; Male always flips, so it is never found.
    assert table["target_found"].tolist() == [0.25, 0.25, 0.25, 0.0]
    # Without the group every attribute flips: never found.
    table = attribute_accuracy(PlaneClassifier(), Identity(), plane_world(), NAMES, hair_group=None)
    assert table["target_found"].tolist() == [0.0] * 4


def test_real_accuracy_counts_the_classifier_mistakes():
    world = plane_world()
    world[1] = {"image": planes(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))[0], "label": LABELS[1]}  # reads Black wrong
    table = attribute_accuracy(PlaneClassifier(), SetTarget(), world, NAMES, batch_size=2)
    assert table["real_accuracy"].tolist() == [0.75, 1.0, 1.0, 1.0]
    assert table["target_found"].tolist() == [1.0] * 4  # translations are drawn from the label alone


def test_classifier_architectures():
    assert isinstance(build_classifier("tiny", 5), TinyClassifier)
    net = build_classifier("resnet10t", 3)  # any timm name, random init
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_the_classifier_learns_the_synthetic_faces():
    cfg = DataConfig(format="faces", scenes_size=32, preprocess="none", scenes_count=400, flip=False)
    names = list(FACE_ATTRIBUTES)
    train_set = FacesDataset(cfg, "train", train=True, attributes=names)
    test_set = FacesDataset(DataConfig(format="faces", scenes_size=32, preprocess="none", scenes_count=100),
                            "test", train=False, attributes=names)
    classifier = train_attribute_classifier(train_set, len(names), steps=80, batch_size=32, arch="tiny", seed=0,
                                            lr=3e-3)
    assert not classifier.training
    table = attribute_accuracy(classifier, Identity(), test_set, names, batch_size=50)
    assert (table["real_accuracy"] >= 0.9).all(), table
    # An identity "translation" keeps every face, so a good classifier seldom finds the target:
    # never for Male and Young (always flipped), for a hair colour about as often as the face had it.
    assert (table.set_index("attribute").loc[["Male", "Young"], "target_found"] <= 0.1).all(), table
