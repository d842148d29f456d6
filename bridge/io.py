"""Files we write: atomically, with the user's umask, and under one output prefix per run.

- :func:`atomic_write`: a killed run never leaves a half-written file that a later run would trust.
- :class:`OutputPrefix`: ``--out results/x`` (or ``results/x.csv``, or a folder) names every file of a
  run as ``results/x<tail>`` with a distinct tail each (``.csv``, ``-eps.csv``...), so no two outputs of
  a run can share a path; :meth:`OutputPrefix.check_writable` fails before any work is done.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advbridge.bridge.errors import CheckpointError, OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read without changing it where the OS allows: Linux's ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file in ``path``'s folder, then rename it onto ``path``.

    Whatever ``write`` returns (e.g. ``Path.write_text``'s count) is ignored.

    The temporary file is private while it is written (``mkstemp``: mode 0600); before the rename it gets
    the mode any new file of the user gets (0666 less the umask). The rename (``os.replace``) is atomic on
    POSIX and Windows; on failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with tmp_path.open("rb+") as f:  # on disk before the rename, so a crash cannot expose a short file
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_json(path: str | Path, what: str, remedy: str = "") -> Any:
    """The JSON in ``path``; an unreadable, truncated or invalid file raises :class:`CheckpointError` naming
    ``what`` it is and ``remedy`` (e.g. "run without --resume to start over"), not a traceback."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        hint = f"; {remedy}" if remedy else ""
        raise CheckpointError(f"cannot read {what} {path} ({type(exc).__name__}: {exc}){hint}") from None


#: Extensions stripped from an ``--out`` value: ``results/x.csv`` means the prefix ``results/x``.
OUTPUT_EXTENSIONS = (".csv", ".md", ".json", ".png")


@dataclass(frozen=True)
class OutputPrefix:
    """The prefix every file of one run is named from: ``<prefix><tail>``.

    Built by :meth:`parse` from what a user types: ``results/x``, ``results/x.csv`` (a known extension is
    dropped, so the table does not become ``x.csv.csv`` and the eps table cannot land on ``x.csv``), or a
    folder (``results/``, or an existing directory: files ``<folder>/<default_name><tail>``).
    """

    prefix: Path

    @classmethod
    def parse(cls, out: str | os.PathLike, default_name: str = "results") -> OutputPrefix:
        text = os.fspath(out)
        path = Path(text).expanduser()
        if text.endswith(("/", os.sep)) or path.is_dir():
            return cls(path / default_name)
        if path.suffix.lower() in OUTPUT_EXTENSIONS:
            path = path.with_suffix("")
        if not path.name:
            raise OutputError(f"expected an output prefix like results/compare, got {text!r}")
        return cls(path)

    @classmethod
    def of(cls, out: str | os.PathLike | OutputPrefix) -> OutputPrefix:
        """``out`` itself if it is an :class:`OutputPrefix`, else :meth:`parse` of it."""
        return out if isinstance(out, OutputPrefix) else cls.parse(out)

    @classmethod
    def writable(cls, out: str | os.PathLike | OutputPrefix | None) -> OutputPrefix | None:
        """The prefix of ``out`` (``None``: no files) after :meth:`check_writable`."""
        if out is None:
            return None
        prefix = cls.of(out)
        prefix.check_writable()
        return prefix

    def file(self, tail: str) -> Path:
        """``<prefix><tail>``, e.g. ``tail='-eps.csv'``; never ``Path.with_suffix`` (it eats dots of the name)."""
        return self.prefix.with_name(self.prefix.name + tail)

    def files(self, tails: Iterable[str]) -> list[Path]:
        """The paths of ``tails``; refuses two tails that name the same file."""
        tails = list(tails)
        if len(set(tails)) != len(tails):
            raise ValueError(f"two outputs of one run would share a path: {tails}")
        return [self.file(t) for t in tails]

    def check_writable(self) -> None:
        """Prove that the run's files can be written, or raise :class:`OutputError`; creates nothing.

        The folder (or, when it does not exist yet, its nearest existing ancestor, where the folder will be
        made) must be a writable directory: a probe file is created there and removed. Called before a run
        starts, so that an unwritable ``--out`` costs seconds, not an attack.
        """
        folder = self.prefix.parent
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(20, "not a folder")
            fd, probe = tempfile.mkstemp(dir=existing, prefix=f".{self.prefix.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise OutputError(
                f"cannot write outputs to {self.prefix}*: {reason} ({existing}); expected --out in a writable folder"
            ) from None
