"""The models the audit accepts: two- and three-class models (AutoAttack's DLR losses undefined: an ``unsupported``
row with its reason and APGD-CE instead), models returning a tuple, a named tuple or a dict (``--logits`` /
``logits=`` picks the logits; a bad choice or none refused in one line before any attack), inputs outside [0, 1]
refused, and a model that expects normalized inputs warned about on its card."""

from __future__ import annotations

import json
import math
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import advbridge
from advbridge.bridge.errors import AdvBridgeError, InvalidParameterError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mnist_cnn"
#: The shortest audit that still runs every kind of naive row (own library only).
SHORT = {"libraries": "own", "steps": 10, "restarts": 1, "square_queries": 20, "eps": 0.05}
CLI_FAST = ["--n", "8", "--libraries", "own", "--no-autoattack", "--no-minimal", "--square-queries", "20",
            "--steps", "5", "--restarts", "1", "--quiet"]  # fmt: skip


class Bands(nn.Module):
    """A linear classifier of 1×8×8 images into ``k`` classes: class i is the brightest of ``k`` interleaved column
    bands (logits: 20 × the band means)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.linear = nn.Linear(64, k)
        weight = torch.zeros(k, 8, 8)
        for i in range(k):
            weight[i, :, i::k] = 20.0 / weight[i, :, i::k].numel()
        self.linear.weight.data, self.linear.bias.data = weight.view(k, 64), torch.zeros(k)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


def band_images(k: int, n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return x, Bands(k)(x).argmax(1)  # labels: the model's own predictions (clean accuracy 1)


class TupleOutput(nn.Module):
    """``(logits, features)``, as many research models return."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.classifier(x), x.flatten(1)


class DictOutput(TupleOutput):
    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return {"features": x.flatten(1), "logits": self.classifier(x)}


Output = namedtuple("Output", ["features", "logits"])


class NamedOutput(TupleOutput):
    def forward(self, x: Tensor) -> Output:  # type: ignore[override]
        return Output(x.flatten(1), self.classifier(x))


@pytest.mark.parametrize("k", [2, 3])
def test_two_and_three_class_models_are_audited_end_to_end(k, tmp_path):
    """AutoAttack standard is a row with status unsupported and the reason (its APGD-T needs 4 classes); APGD-CE
    (and with 3 classes APGD-DLR) runs instead; every other row runs; the card says what ran."""
    x, y = band_images(k)
    report = advbridge.audit(Bands(k), x, y, **SHORT, out=tmp_path / "few")
    rows = report.table.set_index("attack")
    assert rows.loc["autoattack", "status"] == "unsupported"
    assert f"AutoAttack standard needs >= 4 classes, got {k}" in rows.loc["autoattack", "reason"]
    substitutes = ["apgd-ce"] + (["apgd-dlr"] if k == 3 else [])
    assert (rows.loc[substitutes, "status"] == "ok").all()
    if k == 2:
        assert "apgd-dlr" not in rows.index
    naive = report.table[(report.table["stage"] == "naive") & (report.table["status"] == "ok")]
    assert set(report.table["status"]) <= {"ok", "unsupported"}  # no row crashed
    assert report.worst_case_robust_accuracy <= naive["robust_acc"].min()
    card = json.loads((tmp_path / "few-card.json").read_text())
    assert card["num_classes"] == k and card["autoattack_acc"] is None
    assert card["autoattack"]["status"] == "unsupported"
    assert [r["row"] for r in card["autoattack"]["instead"]] == [f"{a} | torchattacks | naive" for a in substitutes]


def test_a_tuple_output_model_is_audited_like_its_logits():
    """``logits=0`` on a model returning (logits, features): the same rows, to the number, as the bare classifier."""
    x, y = band_images(4)
    plain = advbridge.audit(Bands(4), x, y, **SHORT, minimal=False, autoattack=False)
    chosen = advbridge.audit(TupleOutput(Bands(4)), x, y, **SHORT, minimal=False, autoattack=False, logits=0)
    columns = ["attack", "library", "stage", "status", "robust_acc", "propagations"]
    pd.testing.assert_frame_equal(plain.table[columns], chosen.table[columns])


@pytest.mark.parametrize(("module", "choice"), [(DictOutput, "logits"), (NamedOutput, "logits"), (NamedOutput, 1)])
def test_a_dict_or_named_tuple_output_picks_its_logits_by_key(module, choice):
    from advbridge.bridge.logits import select_logits

    x, _ = band_images(4, n=4)
    picked = select_logits(module(Bands(4)), choice, x)
    assert torch.equal(picked(x), Bands(4)(x))


@pytest.mark.parametrize(
    ("module", "choice", "message"),
    [
        (TupleOutput, None, "got a tuple of 2 outputs; choose the logits with logits= KEY_OR_INDEX, one of 0, 1"),
        (TupleOutput, 2, "expected logits= one of 0, 1 (TupleOutput returns a tuple of 2 outputs), got '2'"),
        (DictOutput, "scores", "expected logits= one of features, logits (DictOutput returns a dict with keys"),
        (NamedOutput, "-1", "expected logits= one of 0, 1, features, logits"),
        (Bands, 0, "expected logits= only with a model that returns several outputs"),
    ],
)
def test_a_bad_or_missing_logits_choice_is_refused_before_any_attack(module, choice, message, monkeypatch):
    import advbridge.experiments.audit.command as command

    monkeypatch.setattr(command, "run_audit", lambda *a, **k: pytest.fail("attacked despite a bad logits choice"))
    x, y = band_images(4, n=4)
    with pytest.raises(InvalidParameterError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        advbridge.audit(module(Bands(4)) if module is not Bands else Bands(4), x, y, **SHORT, logits=choice)
    assert "\n" not in str(raised.value)


def tuple_factory(folder: Path, output: str = "tuple") -> str:
    """A ``FILE.py:make`` building the committed MNIST classifier returning ``(logits, probabilities)`` (or a dict)."""
    path = folder / f"{output}_model.py"
    value = "(z, z.softmax(1))" if output == "tuple" else '{"logits": z, "probabilities": z.softmax(1)}'
    path.write_text(f"""
from safetensors.torch import load_file
from torch import nn
from advbridge.zoo.models import create_classifier


class Several(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = create_classifier("advbridge_mnist_cnn", num_classes=10, in_chans=1, mean=(0.1307,), std=(0.3081,))
        self.net.load_state_dict(load_file({str(FIXTURE / "model.safetensors")!r}), strict=True)

    def forward(self, x):
        z = self.net(x)
        return {value}


def make():
    return Several().eval()
""")
    return f"{path}:make"


@pytest.mark.slow  # the API's tuple test stays fast; this one adds the CLI's --model path
def test_cli_audit_of_a_tuple_output_model(tmp_path, capsys):
    """``--model FILE.py:make --logits 0``: audited, titled with the model, the same clean accuracy as the CNN."""
    from advbridge.cli import main

    model = tuple_factory(tmp_path)
    assert main(["audit", "--model", model, "--logits", "0", *CLI_FAST, "--out", str(tmp_path / "a")]) == 0
    card = json.loads((tmp_path / "a-card.json").read_text())
    assert card["name"] == model and float(card["clean_acc"]) >= 75
    assert (tmp_path / "a.md").read_text().startswith(f"# Audit: {model} on mnist-5k\n")
    table = pd.read_csv(tmp_path / "a.csv")
    assert (table["status"] == "ok").all(), table[["attack", "status", "reason"]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "{tuple}"], "got a tuple of 2 outputs; choose the logits with --logits KEY_OR_INDEX"),
        (["--model", "{tuple}", "--logits", "7"], "expected --logits one of 0, 1"),
        (["--defense-module", "{dict}", "--logits", "scores"], "expected --logits one of logits, probabilities"),
        (["--defense-module", "{dict}"], "with keys 'logits', 'probabilities'; choose the logits with --logits"),
        (["--logits", "0"], "expected --logits with your own model or module returning several outputs"),
    ],
)
def test_cli_bad_or_missing_logits_exits_2_in_one_line(extra, message, tmp_path, monkeypatch, capsys):
    from advbridge.cli import main

    models = tmp_path / "models"
    models.mkdir()
    names = {"tuple": tuple_factory(models), "dict": tuple_factory(models, "dict")}
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["audit", *[e.format(**names) for e in extra], *CLI_FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert list(work.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (lambda x: x * 255, r"got \[0, 2\d\d(\.\d+)?\]: pixel values 0..255\? divide them by 255"),
        (lambda x: (x - 0.5) / 0.25, r"got \[-2, 2\]: normalized images\? pass them in \[0, 1\] and put the normal"),
        (lambda x: x.index_fill(3, torch.tensor([0]), math.nan), "expected finite pixel values, got 16 NaN/Inf"),
    ],
)
def test_inputs_outside_0_1_are_refused_with_the_likely_cause(images, message):
    x, y = band_images(2, n=2)
    x = x.clamp(0.0, 1.0)
    x[0, 0, 0, 1], x[0, 0, 0, 2] = 0.0, 1.0
    with pytest.raises(AdvBridgeError, match=message):
        advbridge.audit(Bands(2), images(x), y, **SHORT)


class ExpectsStandardized(nn.Module):
    """Brighter or darker than average, for standardized inputs: ``(sum z, -sum z)``; on [0, 1] images the sum is
    always positive, so every image is called bright (chance accuracy)."""

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([s, -s], 1)


def test_a_model_expecting_normalized_inputs_gets_a_warning_and_others_none(mnist_model, mnist_batch):
    from advbridge.experiments.audit.systems import normalization_hint

    g = torch.Generator().manual_seed(1)
    x = (0.5 + 0.2 * torch.randn(64, 1, 8, 8, generator=g)).clamp(0, 1)
    y = (x.flatten(1).mean(1) < x.mean()).long()  # 0: bright, 1: dark, about half each
    hint = normalization_hint(ExpectsStandardized(), x, y, 2)
    assert hint is not None and hint.startswith("the model seems to expect normalized inputs: clean accuracy 0.")
    assert "\n" not in hint
    assert normalization_hint(Bands(2), *band_images(2, n=64), 2) is None  # its normalization inside (none needed)
    assert normalization_hint(mnist_model, *mnist_batch, 10) is None  # the committed CNN: normalization inside
    torch.manual_seed(0)
    untrained = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    assert normalization_hint(untrained, *mnist_batch, 10) is None  # did not learn: no evidence of either
