"""Fixtures for the zoo tests: the offline data folder beside the repository and small image trees."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from PIL import Image


def find_shared_data() -> Path | None:
    """The offline data folder: ``$ADVBRIDGE_SHARED_DATA`` if set, else ``../shared/data`` beside the repo."""
    env = os.environ.get("ADVBRIDGE_SHARED_DATA")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder, or skip the test saying where it was looked for."""
    folder = find_shared_data()
    if folder is None:
        pytest.skip("offline data not found: set ADVBRIDGE_SHARED_DATA or put it in ../shared/data beside the repo")
    return folder


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
