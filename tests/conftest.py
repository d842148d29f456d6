"""Shared fixtures: the committed MNIST test classifier, in a model cache of the session's own, and real digits.

The suite attacks fixed weights, never weights trained on the machine that runs it: a model trained here
differs from one trained on another CPU (other kernels, other rounding; measured 0.978 vs 0.979 test
accuracy), and every agreement bound would be tuned on one machine. ``tests/fixtures/mnist_cnn/`` holds
``advbridge_mnist_cnn`` trained on mnist-5k with the default config (``python cli.py train``), as
safetensors with its card (sha256 checked on load). The session gets an empty ``ADVBRIDGE_CACHE`` holding
only that checkpoint, under the key of the default config, so the CLI (also in subprocesses) finds it and
trains nothing, and the user's own cache is never read or written. The training path has its own tests
(``tests/zoo/test_zoo_training.py``), each with a cache of its own.

Deterministic algorithms (``torch.use_deterministic_algorithms``) are on only where a test asks for them: the
``deterministic`` fixture (one test), ``deterministic_module`` (a module's tests and its module-scoped
fixtures) or ``deterministic_block`` (inside one module-scoped fixture), for the tests that compare results bitwise across libraries, layouts, batchings or runs. Both put
back the setting they found (mode and ``warn_only``), and whatever a test does to the setting is undone after
it (``_no_leaked_determinism``): no test runs under a setting an earlier test left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fixture_models import MNIST_CNN, default_mnist_config


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory):
    """A fresh ``ADVBRIDGE_CACHE`` for the session, holding the committed test classifier."""
    from advbridge.zoo.checkpoints import checkpoint_dir

    cache = tmp_path_factory.mktemp("advbridge-cache")
    previous = os.environ.get("ADVBRIDGE_CACHE")
    os.environ["ADVBRIDGE_CACHE"] = str(cache)
    cfg = default_mnist_config().resolved()
    shutil.copytree(MNIST_CNN, checkpoint_dir(cfg.dataset, cfg.model, cfg.cache_fields()))
    try:
        yield cache
    finally:
        if previous is None:
            os.environ.pop("ADVBRIDGE_CACHE", None)
        else:
            os.environ["ADVBRIDGE_CACHE"] = previous


def _determinism() -> tuple[bool, bool]:
    """The deterministic-algorithms setting: (mode, warn_only)."""
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic algorithms on inside the block; the previous mode and ``warn_only`` flag back after it."""
    enabled, warn_only = _determinism()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture
def deterministic() -> Iterator[None]:
    """Deterministic algorithms for one test (``@pytest.mark.usefixtures("deterministic")``)."""
    with deterministic_algorithms():
        yield


@pytest.fixture(scope="module")
def deterministic_module() -> Iterator[None]:
    """Deterministic algorithms for a whole module, its module-scoped fixtures included: with
    ``pytestmark = pytest.mark.usefixtures("deterministic_module")`` it is set up before the module's other
    module-scoped fixtures (pytest sets up ``usefixtures`` before a test's arguments, scope by scope)."""
    with deterministic_algorithms():
        yield


@pytest.fixture(scope="session")
def deterministic_block() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """:func:`deterministic_algorithms`, for a module-scoped fixture that needs them while it computes and
    not after (``with deterministic_block(): ...``)."""
    return deterministic_algorithms


@pytest.fixture(autouse=True)
def _no_leaked_determinism() -> Iterator[None]:
    """Whatever a test, or the code it calls, does to the deterministic-algorithms setting is undone after it
    (``experiments.bench.agreement.main`` turns it on for its process, and never off)."""
    enabled, warn_only = _determinism()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@pytest.fixture(scope="session")
def mnist_workload(model_cache):
    """The committed ``advbridge_mnist_cnn`` and 64 of its mnist-5k test digits (CPU)."""
    from advbridge.experiments.workload import load_workload
    from advbridge.zoo import training

    real_train = training.train

    def refuse(*args, **kwargs):
        raise AssertionError("the suite must attack the committed test classifier, not train one")

    training.train = refuse
    try:
        return load_workload("mnist-5k", n=64, seed=0, device="cpu", progress=False)
    finally:
        training.train = real_train


@pytest.fixture(scope="session")
def mnist_model(mnist_workload):
    return mnist_workload.model


@pytest.fixture(scope="session")
def mnist_batch(mnist_workload):
    return mnist_workload.x, mnist_workload.y


def find_shared_data() -> Path | None:
    """The offline data folder: ``$ADVBRIDGE_SHARED_DATA`` if set, else ``../shared/data`` beside the repo."""
    env = os.environ.get("ADVBRIDGE_SHARED_DATA")
    candidate = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder, or skip the test saying where it was looked for."""
    folder = find_shared_data()
    if folder is None:
        pytest.skip("offline data not found: set ADVBRIDGE_SHARED_DATA or put it in ../shared/data beside the repo")
    return folder
