"""Fixtures for the zoo tests: small image trees (the offline data folder is in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from PIL import Image


def _write_images(folder: Path, classes: Iterable[str], per_class: int) -> None:
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # Each class has its own grey level (20 * label), so a test can read the label back from the pixels;
            # sizes and modes vary as in real trees.
            size = (40 + 3 * i, 30 + 5 * (i % 3))
            img = Image.new("RGB", size, (20 * label,) * 3)
            if i % 2:
                img = img.convert("L")
            img.save(folder / name / f"img{i:03d}.png")


@pytest.fixture
def make_image_tree(tmp_path: Path) -> Callable[..., Path]:
    """``make_image_tree(classes, per_class=5, splits=None, root=None)``: a class-per-folder tree of PNGs.

    Class ``k`` (in the given order) is filled with grey level ``20 * k``. With ``splits=("train", "test")``
    each split gets its own class folders.
    """

    def make(
        classes: Iterable[str], per_class: int = 5, splits: Iterable[str] | None = None, root: Path | None = None
    ) -> Path:
        root = root or tmp_path / "tree"
        classes = list(classes)
        for split in splits or [None]:
            _write_images(root / split if split else root, classes, per_class)
        return root

    return make
