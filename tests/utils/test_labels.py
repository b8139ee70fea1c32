"""The one rule for valid label values, on numpy arrays and torch tensors."""
import numpy as np
import torch

from aeroseg.utils.labels import invalid_label_mask


def test_class_indices_and_the_ignore_value_are_valid_everything_else_is_not():
    values = [-1, 0, 3, 4, 5, 254, 255]
    expected = [True, False, False, True, True, True, False]  # 4 classes (0..3), 255 = ignore
    assert invalid_label_mask(np.array(values), 4, 255).tolist() == expected
    assert invalid_label_mask(torch.tensor(values), 4, 255).tolist() == expected
    assert invalid_label_mask(np.array([0, 3, 255], np.uint8), 4, 255).tolist() == [False, False, False]
