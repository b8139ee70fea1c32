"""The end-of-run summary: tiles and pixels per class and split, skipped inputs."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .constants import IGNORE_INDEX, SPLITS
from .errors import PrepareError
from .output import ImageResult, output_dir


class Summary:
    """Accumulates :class:`ImageResult` objects and prints the end-of-run report."""

    def __init__(self, title: str, class_names: Sequence[str], dst: Path,
                 unknown_label: str = "unknown colours (written as 255)"):
        self.title = title
        self.class_names = tuple(class_names)
        self.dst = Path(dst)
        self.unknown_label = unknown_label
        self.images: Counter = Counter()
        self.tiles: Counter = Counter()
        self.dropped: Counter = Counter()
        self.notes: Counter = Counter()
        self.unknown: Counter = Counter()
        self.pixels: Dict[str, np.ndarray] = {}
        self.written: Dict[str, set] = {}
        self.skipped: List[str] = []

    def add(self, result: ImageResult) -> None:
        """Fold one image's result into the totals."""
        split = result.split
        self.images[split] += 1
        self.tiles[split] += len(result.tiles)
        self.dropped[split] += result.dropped_empty
        self.pixels.setdefault(split, np.zeros(256, np.int64))
        self.pixels[split] += result.pixels
        self.written.setdefault(split, set()).update(result.tiles)
        self.unknown.update(result.unknown)
        self.notes.update((split, note) for note in result.notes)

    def skip(self, error: PrepareError) -> None:
        """Record an input skipped because of ``--skip-bad``."""
        self.skipped.append(str(error))

    def leftover_files(self) -> Dict[str, int]:
        """Count ``*.png`` files in the output folders that this run did not write.

        They come from an earlier run with other options or inputs; they are
        reported, never deleted.
        """
        leftovers = {}
        for split in sorted(self.written):
            for kind in ("images", "labels"):
                folder = output_dir(self.dst, split, kind)
                extra = [p for p in folder.glob("*.png") if p.stem not in self.written[split]]
                if extra:
                    leftovers[f"{split}/{kind}"] = len(extra)
        return leftovers

    def format(self) -> str:
        """The report as text: tiles per split, pixels per class, problems."""
        splits = [s for s in SPLITS if s in self.images] + sorted(
            s for s in self.images if s not in SPLITS)
        lines = [f"{self.title}: wrote tiles to {self.dst}"]
        lines.append(f"  {'split':<7}{'images':>9}{'tiles':>10}{'dropped empty':>15}")
        for split in splits:
            lines.append(f"  {split:<7}{self.images[split]:>9,}{self.tiles[split]:>10,}"
                         f"{self.dropped[split]:>15,}")
        lines.append("  pixels per class in the written label tiles:")
        header = "".join(f"{s:>16}" for s in splits)
        lines.append(f"  {'idx':>4} {'class':<20}{header}")
        rows = [(str(i), name, i) for i, name in enumerate(self.class_names)]
        rows.append(("255", "(ignore)", IGNORE_INDEX))
        for idx_text, name, idx in rows:
            counts = "".join(f"{int(self.pixels[s][idx]):>16,}" for s in splits)
            lines.append(f"  {idx_text:>4} {name:<20}{counts}")
        for (split, note), count in sorted(self.notes.items()):
            lines.append(f"  {split}: {count:,} image(s) {note}")
        if self.unknown:
            total = sum(self.unknown.values())
            lines.append(f"  {self.unknown_label}: {total:,} pixels in "
                         f"{len(self.unknown)} value(s); most frequent:")
            for key, count in self.unknown.most_common(10):
                lines.append(f"    {key}: {count:,}")
        for where, count in self.leftover_files().items():
            lines.append(f"  note: {count:,} file(s) in {self.dst / where} were not written by "
                         f"this run (left from an earlier run with other options?)")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} bad input(s) (--skip-bad):")
            lines.extend(f"    {message}" for message in sorted(self.skipped))
        return "\n".join(lines)
