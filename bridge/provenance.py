"""Where a result came from: git revision, package versions, machine. Recorded in every result file."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from advbridge.bridge.distributed import world

_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "adversarial-robustness-toolbox",
    "torchattacks",
    "foolbox",
    "adv-lib",
)
_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def git_revision() -> str:
    """``git rev-parse --short HEAD`` of the advbridge checkout (``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + ("+dirty" if dirty else "")) if rev else "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance() -> dict[str, object]:
    """Git revision, package versions, Python, machine, and the number of ranks the run was sharded over."""
    return {
        "world_size": world().size,
        "git_revision": git_revision(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
    }
