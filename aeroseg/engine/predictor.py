"""Segment images of any size with any class names: sliding-window inference."""
from typing import List, Sequence

import torch

__all__ = ["SlidingWindowPredictor", "window_offsets"]


def window_offsets(length: int, window: int, stride: int) -> List[int]:
    """Start offsets covering ``length``; the last window is moved back to end at the border."""
    if length <= window:
        return [0]
    offsets = list(range(0, length - window, stride))
    offsets.append(length - window)
    return offsets


class SlidingWindowPredictor:
    """Per-class probabilities (K, H, W) of a whole scene with a model trained on tiles.

    The scene is cut into ``tile`` x ``tile`` windows overlapping by ``overlap`` (a fraction),
    the windows are segmented in batches of ``batch_size`` at the model's training resolution,
    and the overlapping probabilities are averaged. Scenes no larger than a tile are segmented
    in one pass. The model is used in eval mode with its current vocabulary.
    """

    def __init__(self, model, tile: int = 256, overlap: float = 0.25, batch_size: int = 4):
        if tile <= 0 or not 0 <= overlap < 1 or batch_size <= 0:
            raise ValueError(f"tile={tile} must be > 0, overlap={overlap} in [0, 1), batch_size={batch_size} > 0")
        self.model, self.tile, self.batch_size = model, int(tile), int(batch_size)
        self.stride = max(1, int(round(self.tile * (1 - overlap))))

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """image: (3, H, W) RGB on the 0..255 scale -> (K, H, W) probabilities (CPU, float32)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._predict(image)
        finally:
            self.model.train(was_training)

    def _predict(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        windows = [(y, x) for y in window_offsets(height, self.tile, self.stride)
                   for x in window_offsets(width, self.tile, self.stride)]
        scores = None
        counts = torch.zeros(height, width)
        for start in range(0, len(windows), self.batch_size):
            batch = windows[start:start + self.batch_size]
            inputs = []
            for y, x in batch:
                crop = image[:, y:y + self.tile, x:x + self.tile]
                inputs.append({"image": crop, "height": crop.shape[1], "width": crop.shape[2]})
            outputs = self.model(inputs)
            for (y, x), out in zip(batch, outputs):
                s = out["sem_seg"].float().cpu()
                if scores is None:
                    scores = torch.zeros(s.shape[0], height, width)
                scores[:, y:y + s.shape[1], x:x + s.shape[2]] += s
                counts[y:y + s.shape[1], x:x + s.shape[2]] += 1
        return scores / counts


def classes_from_text(text: str) -> Sequence[str]:
    """"a, b ,c" -> ["a", "b", "c"] (empty entries dropped)."""
    return [c.strip() for c in text.split(",") if c.strip()]
