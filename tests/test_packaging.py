"""Install hygiene: installed, advbridge adds one top-level name (``advbridge``); the design card's folders are
its subpackages, so a user's own ``experiments/``, ``zoo/`` or ``bridge/`` never shadows them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
CARD_FOLDERS = ("bridge", "own_attacks", "defenses", "zoo", "experiments")


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {"advbridge"} | {
        "advbridge." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in CARD_FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(config["packages"]) == found
    assert "package-dir" not in config  # the links are the mapping: one import path for every tool


def test_the_card_folders_are_linked_into_the_package_and_not_importable_bare():
    for folder in CARD_FOLDERS:
        link = ROOT / "advbridge" / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), link
    code = "import advbridge.bridge.errors as e, sys; print(e.__file__)\ntry:\n    import bridge\nexcept ImportError as x: print(x)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    first, second = done.stdout.strip().splitlines()
    assert first == str(ROOT / "advbridge" / "bridge" / "errors.py"), done.stdout
    assert second.startswith("import advbridge.bridge, not bridge"), done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """advbridge installed (not editable, no dependencies) into an empty target folder."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("advbridge", *CARD_FOLDERS):  # a copy: the build writes build/ and *.egg-info beside it
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         "--no-cache-dir", str(source)],
        check=True, env=env, cwd=source,
    )  # fmt: skip
    return target


@pytest.mark.slow
def test_a_wheel_install_adds_no_generic_top_level_name(installed):
    names = {p.name for p in installed.iterdir()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"advbridge", "bin"}, names
    assert {p.name for p in (installed / "advbridge").iterdir()} >= {"cli.py", *CARD_FOLDERS}
    assert "advbridge.cli:main" in next(installed.glob("*.dist-info/entry_points.txt")).read_text()


@pytest.mark.slow
def test_the_installed_package_ignores_a_users_own_experiments_zoo_and_bridge(installed, tmp_path):
    for name in ("experiments", "zoo", "bridge", "defenses", "own_attacks"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user package {name} was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    code = (
        "import torch, advbridge, advbridge.experiments.commands;"
        "assert advbridge.__path__ == [advbridge.__path__[0]], advbridge.__path__;"
        "torch.manual_seed(0);"
        "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10));"
        "x = torch.rand(8, 1, 28, 28); y = net(x).argmax(1);"
        "run = advbridge.compare(net, x, y, attack='fgsm', libraries='own,torchattacks');"
        "print(run.table[['library', 'clean_acc', 'success_rate']].to_csv(index=False))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = done.stdout.strip().splitlines()
    assert table[0] == "library,clean_acc,success_rate" and [r.split(",")[:2] for r in table[1:]] == [
        ["own", "1.0"], ["torchattacks", "1.0"]
    ], done.stdout  # fmt: skip
    script = subprocess.run(
        [str(installed / "bin" / "advbridge"), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert script.returncode == 0 and script.stdout.strip().startswith("advbridge "), script.stderr
