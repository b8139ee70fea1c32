"""What a valid label value is: a class index 0..K-1 or the ignore value. One rule for every check."""

__all__ = ["invalid_label_mask"]


def invalid_label_mask(label, num_classes: int, ignore_value: int):
    """Boolean mask of the values of ``label`` that are neither class indices nor ``ignore_value``.

    Works on numpy arrays and torch tensors alike (label maps, or arrays of label values); negative
    values (possible in int tensors) are invalid too.
    """
    return ((label < 0) | (label >= num_classes)) & (label != ignore_value)
