"""The FCN-score definitions on a confusion matrix small enough to check by hand."""

import pytest
import torch

from translate.eval.segmentation import confusion_matrix, label_scores


def test_scores_follow_their_definitions():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 255, 255])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2, 7, 0, 1])  # 7 is no class; 255 is ignored
    conf = confusion_matrix(pred, target, num_classes=3)
    assert conf.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]
    s = label_scores(conf)
    assert s["pixel_accuracy"] == pytest.approx(5 / 8)
    assert s["class_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    # IoU: class 0: 3 / (4 + 4 - 3); class 1: 1 / (2 + 2 - 1); class 2: 1 / (2 + 1 - 1)
    assert s["class_iou"] == pytest.approx((3 / 5 + 1 / 3 + 1 / 2) / 3)


def test_ground_truth_scores_one_and_absent_classes_are_left_out():
    target = torch.randint(0, 4, (2, 16, 16))
    s = label_scores(confusion_matrix(target, target, num_classes=6))
    assert s == {"pixel_accuracy": 1.0, "class_accuracy": 1.0, "class_iou": 1.0}
