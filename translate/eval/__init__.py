"""Evaluation: how well translations agree with ground truth."""
