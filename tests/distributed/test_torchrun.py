"""``torchrun --standalone --nproc_per_node=2`` (gloo, CPU): the sharded ``compare`` and ``defend`` write the
CSV a single process writes, byte for byte; distributed adversarial training gives the single-process model's
accuracy; a broken launch is one line and exit code 2.

Both sides run one torch thread per process (a rank of ``torchrun`` gets ``OMP_NUM_THREADS=1``), on the same
machine: the claim is that sharding changes nothing, not that two thread counts round alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist

from advbridge.bridge import distributed
from advbridge.bridge.distributed import DistributedSetupError, World, environment_world
from advbridge.cli import main

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("torchrun_cli.py")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

SMALL = ["--n", "32", "--attack-batch-size", "8", "--quiet", "--libraries", "all"]
COMPARE = {
    "fgsm": ["compare", "--attack", "fgsm", *SMALL],
    "pgd": ["compare", "--attack", "pgd", "--steps", "5", "--random-start", *SMALL],
    "deepfool": ["compare", "--attack", "deepfool", "--steps", "20", *SMALL],
    "ddn": ["compare", "--attack", "ddn", "--steps", "20", *SMALL],
    "defend-bit-depth": [
        "defend", "--defense", "bit-depth", "--attack", "pgd", "--steps", "5", "--random-start", *SMALL
    ],
}  # fmt: skip


def torchrun(commands: list[list[str]], tmp_path: Path, env: dict[str, str] | None = None, nproc: int = 2):
    """Run ``cli.main`` on each command line under ``torchrun`` with ``nproc`` ranks (one thread each)."""
    script = tmp_path / f"commands-{len(list(tmp_path.glob('commands-*')))}.json"
    script.write_text(json.dumps(commands))
    clean = {k: v for k, v in os.environ.items() if k not in (*distributed.TORCHRUN_VARIABLES, "LOCAL_WORLD_SIZE")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [*launch, str(DRIVER), str(script)],
        cwd=ROOT,
        env={**clean, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,  # torchrun's agent signals its process group when it stops
    )


def one_thread_main(argv: list[str]) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_sharded_compare_and_defend_write_the_single_process_csv(tmp_path, mnist_workload):
    (tmp_path / "one").mkdir()
    for name, argv in COMPARE.items():
        assert one_thread_main([*argv, "--out", str(tmp_path / "one" / name)]) == 0
    proc = torchrun([[*argv, "--out", str(tmp_path / "two" / name)] for name, argv in COMPARE.items()], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in COMPARE:
        one, two = (tmp_path / d / f"{name}.csv" for d in ("one", "two"))
        assert one.read_bytes() == two.read_bytes(), f"{name}: the sharded CSV differs"
        assert json.loads(two.with_suffix(".json").read_text())["world_size"] == 2
        assert json.loads(one.with_suffix(".json").read_text())["world_size"] == 1
        assert not two.with_suffix(".progress").exists()
    sharded = pd.read_csv(tmp_path / "two" / "pgd.csv")
    assert len(sharded) == 5 and (sharded["n"] == 32).all(), "every library, on all 32 images"
    assert proc.stdout.count("wrote ") == len(COMPARE), "rank 0 alone prints (and writes)"


@pytest.mark.slow
def test_distributed_adversarial_training_matches_one_process(tmp_path, mnist_workload):
    """One epoch of PGD fine-tuning (L∞ 0.1) on 2,048 digits from the committed classifier, global batch 128:
    2 ranks of 64 each vs one process of 128. Clean and PGD accuracy within 2 points (measured 0.1 and 0.5)."""
    from fixture_models import MNIST_CNN

    from advbridge.experiments.workload import load_workload
    from advbridge.own_attacks import pgd
    from advbridge.zoo.training import load_trained

    argv = ["train", "--defense", "adv-pgd", "--eps", "0.1", "--steps", "5", "--epochs", "1", "--max-train", "2048"]
    argv += ["--weights", str(MNIST_CNN / "model.safetensors"), "--quiet"]
    caches = {name: tmp_path / name for name in ("one", "two")}
    for cache in caches.values():
        cache.mkdir()
    proc = torchrun([argv], tmp_path, env={"ADVBRIDGE_CACHE": str(caches["two"])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    previous = os.environ["ADVBRIDGE_CACHE"]
    os.environ["ADVBRIDGE_CACHE"] = str(caches["one"])
    try:
        assert one_thread_main(argv) == 0
    finally:
        os.environ["ADVBRIDGE_CACHE"] = previous

    (one,), (two,) = (list((cache / "models").iterdir()) for cache in caches.values())
    assert one.name == two.name, "the same cache key with and without torchrun"
    assert sorted(p.name for p in two.iterdir()) == ["card.json", "model.safetensors"], "written once, atomically"
    workload = load_workload("mnist-5k", n=1000, seed=1, device="cpu", progress=False)
    accuracy = {}
    for name, folder in (("one", one), ("two", two)):
        model, card = load_trained(folder)
        x_adv = pgd(model, workload.x, workload.y, eps=0.1, steps=10, step_size=0.025)
        with torch.no_grad():
            accuracy[name] = (card["accuracy"], float((model(x_adv).argmax(1) == workload.y).double().mean()))
    assert json.loads((two / "card.json").read_text())["world_size"] == 2
    assert "world_size" not in json.loads((one / "card.json").read_text())
    assert accuracy["two"][1] > 0.5, f"the distributed model must be robust: {accuracy}"
    for measure in (0, 1):
        assert abs(accuracy["one"][measure] - accuracy["two"][measure]) <= 0.02, accuracy


def test_incomplete_torchrun_environment_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    for name in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["compare", "--attack", "fgsm", "--n", "4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "incomplete torchrun environment" in err and "MASTER_ADDR" in err


def test_environment_world():
    assert environment_world({}) is None
    full = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert environment_world(full) == World(rank=1, size=2, local_rank=1)
    with pytest.raises(DistributedSetupError, match="RANK < WORLD_SIZE"):
        environment_world({**full, "RANK": "2"})
    with pytest.raises(DistributedSetupError, match="integer"):
        environment_world({**full, "WORLD_SIZE": "two"})


def test_ranks_that_disagree_are_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: World(rank=0, size=2))
    monkeypatch.setattr(distributed, "gather", lambda obj: [obj, obj.replace("0.3", "0.1")])
    with pytest.raises(DistributedSetupError, match="ranks disagree on the spec: rank 0 has .*0.3.*rank 1 has .*0.1"):
        distributed.check_same("spec", {"eps": 0.3})
    monkeypatch.setattr(distributed, "gather", lambda obj: [obj, obj])
    distributed.check_same("spec", {"eps": 0.3})


@pytest.mark.parametrize("n", [1000, 129, 130])
def test_each_rank_takes_its_part_of_every_global_batch(monkeypatch, n):
    """Global batch k is dealt rank::2; the weights make DDP's mean of rank means the batch mean."""
    from advbridge.zoo.training import RankBatches

    order = torch.randperm(n)
    parts, weights = [], []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: World(rank=rank, size=2))
        mine, w = RankBatches(128).order(order)
        parts.append(mine)
        weights.append(w)
    kept = [c for c in order.split(128) if len(c) >= 2]
    for k, chunk in enumerate(kept):
        for rank in (0, 1):
            assert torch.equal(parts[rank][64 * k : 64 * k + len(chunk[rank::2])], chunk[rank::2])
        for rank in (0, 1):  # DDP's (1/2)·Σ w_r·(sum_r / n_r) is the batch mean when w_r / (2·n_r) = 1 / n
            assert weights[rank][k] / (2 * len(chunk[rank::2])) == pytest.approx(1 / len(chunk))
    assert sum(len(p) for p in parts) == sum(len(c) for c in kept)
    with pytest.raises(Exception, match="multiple of the world size 2"):
        RankBatches(127)


DATA_ROOT = ROOT.parent / "shared" / "data"
TINY_STUDY = ["study", "mnist-cifar10-vae", "--only", "mnist-vae-purify-pgd", "--data-root", str(DATA_ROOT),
              "--n", "8", "--max-train", "512", "--epochs", "1", "--gen-epochs", "1", "--gen-max-train", "512",
              "--steps", "5", "--attack-batch-size", "4", "--quiet"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "MNIST").is_dir(), reason="needs full MNIST in ../shared/data (the study's data)")
def test_a_study_under_torchrun_writes_the_single_process_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path / "cache"))
    assert one_thread_main([*TINY_STUDY, "--out", str(tmp_path / "one")]) == 0
    proc = torchrun(
        [[*TINY_STUDY, "--out", str(tmp_path / "two")]], tmp_path, {"ADVBRIDGE_CACHE": str(tmp_path / "cache")}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("report.md", "results.csv", "results-eps.csv"):
        one, two = (tmp_path / d / name for d in ("one", "two"))
        assert one.read_bytes() == two.read_bytes(), f"{name}: the study under torchrun differs"
