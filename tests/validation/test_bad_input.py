"""Bad input at every public entry: a typed exception (API) or exit code 2 (CLI), one line naming the
bad value and what is accepted, no traceback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.errors import (
    AdvBridgeError,
    DataNotFoundError,
    InvalidInputError,
    InvalidParameterError,
    UnknownNameError,
    UnsupportedAttackError,
)
from advbridge.bridge.runner import run_attack
from advbridge.bridge.spec import AttackSpec, Norm, parse_eps
from advbridge.cli import main
from advbridge.own_attacks import ddn, deepfool, fgsm, pgd
from advbridge.zoo.datasets import dataset_info, load_dataset
from advbridge.zoo.models import create_classifier

X = torch.full((2, 1, 28, 28), 0.5)
Y = torch.tensor([1, 2])
FGSM = AttackSpec(attack="fgsm", eps=0.1)


def _model():
    return create_classifier("advbridge_mnist_cnn", num_classes=10, in_chans=1, mean=(0.5,), std=(0.5,)).eval()


API_CASES = [
    # names
    (
        "unknown attack",
        lambda: AttackSpec(attack="fgsmm", eps=0.1),
        UnknownNameError,
        "unknown attack 'fgsmm'; did you mean 'fgsm'",
    ),
    ("unknown library", lambda: get_adapter("cleverhans"), UnknownNameError, "unknown library 'cleverhans'"),
    ("unknown norm", lambda: Norm.parse("L3"), InvalidParameterError, "unknown norm 'L3'; accepted: 'Linf'"),
    ("unknown dataset", lambda: dataset_info("cifar100"), UnknownNameError, "did you mean 'cifar10'"),
    (
        "unknown timm model",
        lambda: create_classifier("resnet181", num_classes=10, in_chans=1, mean=(0.5,), std=(0.5,)),
        UnknownNameError,
        "resnet18",
    ),
    # numbers
    ("eps zero", lambda: AttackSpec(attack="pgd", eps=0.0), InvalidParameterError, "expected eps > 0 for pgd, got 0.0"),
    (
        "eps negative",
        lambda: AttackSpec(attack="fgsm", eps=-0.1),
        InvalidParameterError,
        "expected eps > 0 for fgsm, got -0.1",
    ),
    ("eps nan", lambda: AttackSpec(attack="pgd", eps=math.nan), InvalidParameterError, "got nan"),
    ("eps missing", lambda: AttackSpec(attack="pgd"), InvalidParameterError, "expected eps > 0 for pgd, got None"),
    (
        "eps text",
        lambda: parse_eps("eight/255"),
        InvalidParameterError,
        "expected eps as a number or a fraction like '8/255'",
    ),
    (
        "steps zero",
        lambda: AttackSpec(attack="pgd", eps=0.1, steps=0),
        InvalidParameterError,
        "expected steps >= 1 (an integer), got 0",
    ),
    ("steps float", lambda: AttackSpec(attack="pgd", eps=0.1, steps=2.5), InvalidParameterError, "got 2.5"),
    (
        "fgsm steps",
        lambda: AttackSpec(attack="fgsm", eps=0.1, steps=3),
        InvalidParameterError,
        "fgsm takes exactly one step",
    ),
    ("fgsm L2", lambda: AttackSpec(attack="fgsm", norm="L2", eps=0.1), InvalidParameterError, "fgsm is an L∞ attack"),
    ("ddn Linf", lambda: AttackSpec(attack="ddn", norm="Linf"), InvalidParameterError, "ddn is an L2 attack"),
    (
        "step size",
        lambda: AttackSpec(attack="pgd", eps=0.1, step_size=-1.0),
        InvalidParameterError,
        "expected step_size > 0, got -1.0",
    ),
    (
        "overshoot",
        lambda: AttackSpec(attack="deepfool", overshoot=-0.5),
        InvalidParameterError,
        "expected overshoot >= 0, got -0.5",
    ),
    (
        "candidates",
        lambda: AttackSpec(attack="deepfool", candidates=1),
        InvalidParameterError,
        "expected candidates >= 2",
    ),
    ("gamma", lambda: AttackSpec(attack="ddn", gamma=1.5), InvalidParameterError, "expected 0 < gamma < 1, got 1.5"),
    (
        "levels",
        lambda: AttackSpec(attack="ddn", levels=1),
        InvalidParameterError,
        "expected levels >= 2 or None, got 1",
    ),
    (
        "random start",
        lambda: AttackSpec(attack="deepfool", random_start=True),
        InvalidParameterError,
        "random_start applies to pgd only",
    ),
    ("own eps text", lambda: fgsm(_model(), X, Y, eps="0.1"), InvalidParameterError, "expected eps > 0, got '0.1'"),
    (
        "own pgd norm",
        lambda: pgd(_model(), X, Y, eps=0.1, norm="L1"),
        InvalidParameterError,
        "expected norm 'Linf' or 'L2', got 'L1'",
    ),
    ("own ddn gamma", lambda: ddn(_model(), X, Y, gamma=0), InvalidParameterError, "expected 0 < gamma < 1, got 0"),
    (
        "own deepfool batch size",
        lambda: deepfool(_model(), X, Y, batch_size=0),
        InvalidParameterError,
        "expected batch_size >= 1 (an integer) or None, got 0",
    ),
    # modes a library or the attack lacks
    (
        "targeted deepfool",
        lambda: AttackSpec(attack="deepfool", targeted=True),
        UnsupportedAttackError,
        "no reference library",
    ),
    (
        "own targeted deepfool",
        lambda: deepfool(_model(), X, Y, targeted=True),
        InvalidParameterError,
        "targeted DeepFool is not supported",
    ),
    (
        "library lacks attack",
        lambda: get_adapter("advlib").generate(_model(), X, Y, FGSM, 10),
        UnsupportedAttackError,
        "advlib cannot run fgsm (Linf): adv-lib has no FGSM",
    ),
    (
        "library lacks mode",
        lambda: get_adapter("foolbox").generate(_model(), X, Y, FGSM.with_(targeted=True), 10),
        UnsupportedAttackError,
        "untargeted only",
    ),
    # images and labels
    (
        "images above 1",
        lambda: run_attack("own", _model(), X * 3, Y, FGSM),
        InvalidInputError,
        "expected pixel values in [0, 1], got min 1.5, max 1.5",
    ),
    ("images below 0", lambda: run_attack("own", _model(), X - 1, Y, FGSM), InvalidInputError, "got min -0.5"),
    (
        "images nan",
        lambda: run_attack("own", _model(), X.clone().index_fill_(3, torch.tensor([0]), math.nan), Y, FGSM),
        InvalidInputError,
        "expected finite pixel values, got 56 NaN/Inf value(s)",
    ),
    (
        "images rank",
        lambda: run_attack("own", _model(), X[0], Y, FGSM),
        InvalidInputError,
        "expected images of shape (N, C, H, W), got shape (1, 28, 28)",
    ),
    (
        "images channels",
        lambda: run_attack("own", _model(), X.repeat(1, 3, 1, 1), Y, FGSM),
        InvalidInputError,
        "expected 1 channel(s) for this model",
    ),
    (
        "images dtype",
        lambda: run_attack("own", _model(), (X * 255).to(torch.uint8), Y, FGSM),
        InvalidInputError,
        "expected floating-point images in [0, 1], got dtype torch.uint8",
    ),
    (
        "images list",
        lambda: fgsm(_model(), X.tolist(), Y, eps=0.1),
        InvalidInputError,
        "expected inputs as a torch.Tensor, got list",
    ),
    (
        "own attack on a 1-D tensor",
        lambda: pgd(_model(), torch.full((4,), 0.5), Y, eps=0.1),
        InvalidInputError,
        "expected inputs of shape (N, ...) with at least 2 dimensions, got shape (4,)",
    ),
    (
        "own attack on an empty batch",
        lambda: deepfool(_model(), X[:0], Y[:0]),
        InvalidInputError,
        "expected a non-empty batch of inputs, got 0 inputs",
    ),
    (
        "empty batch",
        lambda: run_attack("own", _model(), X[:0], Y[:0], FGSM),
        InvalidInputError,
        "expected a non-empty batch of images, got 0 images",
    ),
    (
        "labels length",
        lambda: run_attack("own", _model(), X, Y[:1], FGSM),
        InvalidInputError,
        "expected labels of shape (2,) to match 2 images, got shape (1,)",
    ),
    (
        "labels range",
        lambda: run_attack("own", _model(), X, torch.tensor([1, 12]), FGSM),
        InvalidInputError,
        "expected labels in [0, 9], got min 1, max 12",
    ),
    (
        "labels dtype",
        lambda: run_attack("own", _model(), X, Y.float(), FGSM),
        InvalidInputError,
        "expected integer class labels, got dtype torch.float32",
    ),
    # data
    (
        "missing data",
        lambda: load_dataset("mnist", data_root="/nonexistent/advbridge-data"),
        DataNotFoundError,
        "/nonexistent/advbridge-data",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_typed_error(case, call, error, message):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, AdvBridgeError)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


MNIST_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mnist_cnn"

CLI_CASES = [
    (["compare", "--attack", "fgsm", "--norm", "L2"], "fgsm is an L∞ attack"),
    (["compare", "--attack", "ddn", "--levels", "1"], "expected --levels as an int >= 2, got 1"),
    (["compare", "--attack", "deepfool", "--targeted"], "targeted DeepFool is not supported"),
    (
        ["compare", "--attack", "deepfool", "--eps-grid", "0.5,-1"],
        "expected --eps-grid as comma-separated finite numbers > 0, got '0.5,-1'",
    ),
    (["compare", "--attack", "pgd", "--attack-batch-size", "0"], "expected --attack-batch-size as an int >= 1, got 0"),
    (["compare", "--attack", "pgd", "--dataset", "imagefolder:/nonexistent/tree"], "/nonexistent/tree"),
    (["compare", "--attack", "pgd", "--dataset", "mnist", "--data-root", "/nonexistent/root"], "/nonexistent/root"),
    (["train", "--dataset", "animals10", "--data-root", "/nonexistent/animals"], "raw-img"),
    # overflowing and infinite numbers, empty lists, options that do not apply: refused, never trained on
    (
        ["compare", "--attack", "pgd", "--eps", "1e400"],
        "expected --eps as a finite number > 0 (a fraction such as 8/255 too), got '1e400'",
    ),
    (["compare", "--attack", "pgd", "--seed", str(2**64)], "expected --seed as an int in [0, 2**63)"),
    (["compare", "--attack", "ddn", "--init-norm", "inf"], "expected --init-norm as a finite number > 0, got inf"),
    (
        ["compare", "--attack", "deepfool", "--eps-grid", ","],
        "expected --eps-grid as comma-separated finite numbers > 0, got ','",
    ),
    (["compare", "--attack", "pgd", "--eps-grid", "0.1"], "expected --eps-grid only with a minimal-norm attack"),
    (["compare", "--attack", "pgd", "--lr", "inf"], "expected --lr as a finite number > 0, got inf"),
    (["train", "--seed", str(2**63)], "expected --seed as an int in [0, 2**63)"),
    (["train", "--clip-grad-norm", "inf"], "expected --clip-grad-norm as a finite number > 0, got inf"),
    (["defend", "--defense", "median", "--bits", "3", "--attack", "pgd"], "--bits does not apply to median"),
    (["defend", "--defense", "distill", "--ratio", "0.5", "--attack", "pgd"], "--ratio does not apply to distill"),
    (["defend", "--defense", "bit-depth", "--refine-steps", "2", "--attack", "pgd"], "--refine-steps does not apply"),
    (["train", "--defense", "adv-pgd", "--generator", "vae"], "expected --generator or --defense, got both"),
    (["train", "--ratio", "0.5"], "--ratio does not apply to no --defense"),
    (["train", "--defense", "distill", "--steps", "3"], "--steps does not apply to distill"),
    # infinite or negative hyper-parameters of a generator, bad counts and lists: refused before any training
    (["train", "--generator", "vae", "--beta", "inf"], "expected --beta as a finite number >= 0, got inf"),
    (["train", "--generator", "vae", "--max-train", "-5"], "expected --max-train as an int >= 1, got -5"),
    (["train", "--generator", "vae", "--seed", "-1"], "expected --seed as an int in [0, 2**63), got -1"),
    (
        ["defend", "--defense", "vae-purify", "--attack", "pgd", "--gen-max-train", "-5"],
        "expected --gen-max-train as an int >= 1, got -5",
    ),
    (["compare", "--attack", "pgd", "--n", "100000"], "expected n <= 1000 (size of mnist-5k test)"),
    (["defend", "--defense", "squeeze-detect", "--attack", "pgd", "--n", "900"], "expected --n + --calibration-n"),
    (["defend", "--defense", "median", "--attack", "pgd", "--eot", "0"], "expected --eot as an int >= 1, got 0"),
    (
        ["defend", "--defense", "median", "--attack", "pgd", "--restarts", "0"],
        "expected --restarts as an int >= 1, got 0",
    ),
    (
        ["defend", "--defense", "median", "--attack", "pgd", "--calibration-n", "0"],
        "expected --calibration-n as an int >= 1, got 0",
    ),
    (["compare", "--attack", "pgd", "--libraries", ","], "expected at least one library of own, art"),
    (["compare", "--attack", "pgd", "--libraries", "own,art,own"], "expected each library once, got own"),
    (["defend", "--defense", "median", "--attack", "pgd", "--defense-libraries", ","], "expected at least one library"),
    (["defend", "--defense", "adv-pgd", "--attack", "pgd", "--defense-libraries", "art,art"], "expected each library"),
    (["defend", "--defense", "adv-pgd", "--attack", "pgd", "--defense-libraries", "foolbox"], "foolbox cannot train"),
    (
        ["defend", "--defense", "adv-pgd", "--attack", "pgd", "--train-epochs", "0"],
        "expected --train-epochs as an int >= 1, got 0",
    ),
    (
        ["defend", "--defense", "adv-pgd", "--attack", "pgd", "--train-max", "-5"],
        "expected --train-max as an int >= 1, got -5",
    ),
    (
        ["defend", "--defense", "adv-pgd", "--attack", "pgd", "--train-lr", "inf"],
        "expected --train-lr as a finite number > 0, got inf",
    ),
    (["defend", "--defense", "adv-pgd", "--attack", "pgd", "--model", "my.py:make"], "expected a model advbridge"),
    (["defend", "--defense", "median", "--attack", "pgd", "--surrogate", "my.py:make"], "expected --surrogate only"),
    (
        ["defend", "--defense-module", "d.py:f", "--surrogate", "a.py:f", "--model", "b.py:f", "--attack", "pgd"],
        "expected the undefended twin once",
    ),
    (["compare", "--attack", "pgd", "--device", "tpu"], "expected --device cpu, cuda or cuda:N, got 'tpu'"),
    (["compare", "--attack", "pgd", "--device", "cuda:7"], "expected --device cpu"),
    (["compare", "--attack", "pgd", "--num-classes", "3"], "expected --num-classes as an int >= 10"),
    (["compare", "--attack", "pgd", "--num-classes", "12"], "expected --num-classes 10 (or none)"),
    (["compare", "--attack", "pgd", "--image-size", "0"], "expected --image-size as an int >= 1, got 0"),
    (["compare", "--attack", "pgd", "--mean", "0.5"], "expected --mean/--std only with a user model"),
    (["compare", "--attack", "pgd", "--checkpoint", str(MNIST_FIXTURE), "--image-size", "32"], "--image-size 28"),
    (["bench", "--n", "0"], "expected --n as an int >= 1, got 0"),
    (["bench", "--attacks", "fgsm,cw"], "'cw'"),
    (["bench", "--libraries", "own,cleverhans"], "'cleverhans'"),
    (["bench", "--device", "tpu"], "expected --device cpu, cuda or cuda:N, got 'tpu'"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_CASES, ids=[" ".join(c[0][1:4]) for c in CLI_CASES])
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    """One line, exit 2, before any work: in an empty folder with an empty model cache, nothing is written
    (no results folder, no model trained or cached)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path / "cache"))
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err
    assert not list(tmp_path.iterdir()), f"a refused command wrote {list(tmp_path.rglob('*'))}"


@pytest.mark.parametrize("content", ["{", "", "[1, 2]"])
def test_a_truncated_resume_file_is_refused_in_one_line(content, tmp_path, capsys, monkeypatch):
    """``run.json`` of a killed compare, truncated or not a mapping: one line naming it, exit 2."""
    monkeypatch.chdir(tmp_path)
    progress = tmp_path / "c.progress"
    progress.mkdir()
    (progress / "run.json").write_text(content)
    code = main(["compare", "--attack", "fgsm", "--n", "4", "--libraries", "own", "--out", "c", "--resume", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and ("run.json" in err or "different settings" in err), err


def test_a_cache_that_is_a_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path / "cache"))
    assert main(["compare", "--attack", "fgsm", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: expected $ADVBRIDGE_CACHE {tmp_path / 'cache'} to be a folder, got a file at {tmp_path / 'cache'}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_debug_flag_shows_the_traceback():
    with pytest.raises(UnknownNameError):
        main(["compare", "--attack", "pgdd", "--debug"])
