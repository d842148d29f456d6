"""The audit's shared fixtures: AttackBench's reference implementation of optimality."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """``attackbench.metrics.distances``, executed from the installed file without importing the package."""
    try:
        dist = importlib.metadata.distribution("attackbenchlib")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("attackbenchlib (the reference implementation; `make install` installs it) is not installed")
    path = dist.locate_file("attackbench/metrics/distances.py")
    spec = importlib.util.spec_from_file_location("attackbench_reference_distances", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
