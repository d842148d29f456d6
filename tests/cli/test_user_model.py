"""A user's own CNN, defined in a file outside the repository, evaluated as it is by ``compare`` and ``defend``:
weights from ``torch.save(state_dict)`` or safetensors, loaded strictly, nothing trained or cached."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from advbridge.cli import main
from advbridge.zoo.datasets import load_tensors

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.head = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x):
        return self.head(self.features((x - 0.1307) / 0.3081).flatten(1))


def make():
    return Net()
"""


@pytest.fixture
def user_model(tmp_path):
    """The file, its weights both ways, one with a key removed, and the user's own accuracy on 16 test digits."""
    (tmp_path / "mynet.py").write_text(NET)
    namespace: dict = {}
    exec(compile(NET, "mynet", "exec"), namespace)
    torch.manual_seed(0)
    net = namespace["make"]().eval()
    with torch.no_grad():  # a few steps of training in the test itself would make the weights CPU-dependent
        net.head.weight.mul_(10)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    broken = net.state_dict()
    del broken["head.bias"]
    torch.save(broken, tmp_path / "missing.pt")
    x, y = load_tensors("mnist-5k", "test", n=16, seed=0)
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == y).double().mean())
    return tmp_path, accuracy


def _cache_entries() -> set[str]:
    root = Path(os.environ["ADVBRIDGE_CACHE"])
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("weights", ["net.pt", "net.safetensors"])
def test_compare_and_defend_evaluate_the_users_model_as_it_is(user_model, weights, tmp_path):
    folder, accuracy = user_model
    before = _cache_entries()
    model = ["--model", f"{folder / 'mynet.py'}:make", "--checkpoint", str(folder / weights), "--n", "16"]
    out = tmp_path / "out"
    assert main(["compare", "--attack", "fgsm", *model, "--libraries", "own,torchattacks", "--quiet",
                 "--out", str(out / "compare")]) == 0  # fmt: skip
    assert main(["defend", "--defense", "median", "--attack", "fgsm", *model, "--libraries", "own", "--quiet",
                 "--out", str(out / "median")]) == 0  # fmt: skip
    compare = pd.read_csv(out / "compare.csv")
    assert compare["clean_acc"].tolist() == pytest.approx([accuracy] * 2)
    defend = pd.read_csv(out / "median.csv")
    # the model's check reaches every row: clean accuracy − 1/K, and this untrained net is flagged for it
    assert defend["failed_training"].tolist() == pytest.approx([accuracy - 0.1] * len(defend))
    assert (accuracy < 0.15) == defend["flags"].fillna("").str.contains("failed_training").all()
    assert _cache_entries() == before, "a user's model is never trained or cached"


def test_a_checkpoint_with_a_missing_key_is_refused_by_name(user_model, tmp_path, capsys):
    folder, _ = user_model
    code = main(["compare", "--attack", "fgsm", "--model", f"{folder / 'mynet.py'}:make", "--checkpoint",
                 str(folder / "missing.pt"), "--n", "16", "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing: head.bias" in err, err
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{folder}/mynet.py:nope", "expected a callable 'nope'"),
        ("{folder}/absent.py:make", "expected a Python file"),
        ("no_such_package.mod:make", "expected an importable module"),
    ],
)
def test_a_bad_factory_is_one_line_and_exit_2(user_model, model, message, tmp_path, capsys):
    folder, _ = user_model
    code = main(["compare", "--attack", "fgsm", "--model", model.format(folder=folder), "--n", "4",
                 "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


DEFENSE = """
import torch
from torch import nn
from mynet import make as make_net


class Binarize(nn.Module):
    def forward(self, x):
        return (x > 0.5).float()  # no gradient at all: only BPDA attacks through it


class Defended(nn.Module):
    def __init__(self, randomized):
        super().__init__()
        self.preprocess, self.classifier, self.randomized = Binarize(), make_net(), randomized
        self.classifier.load_state_dict(torch.load(WEIGHTS, weights_only=True))

    def forward(self, x):
        if self.randomized:
            x = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
        return self.classifier(self.preprocess(x))


def make():
    return Defended(False)


def make_random():
    return Defended(True)
"""


@pytest.mark.parametrize("factory", ["make", "make_random"])
def test_a_users_defense_module_gets_the_engines_rows_and_the_attacks_it_declares(user_model, factory, tmp_path):
    folder, accuracy = user_model
    (folder / "mydefense.py").write_text(f"WEIGHTS = {str(folder / 'net.pt')!r}\n{DEFENSE}")
    before = _cache_entries()
    twin = ["--surrogate" if factory == "make" else "--model", f"{folder / 'mynet.py'}:make",
            "--checkpoint", str(folder / "net.pt")]  # fmt: skip
    assert main(["defend", "--defense-module", f"{folder / 'mydefense.py'}:{factory}", *twin, "--attack", "pgd",
                 "--steps", "5", "--n", "16", "--libraries", "own", "--restarts", "1", "--eot", "2",
                 "--no-autoattack", "--quiet", "--out", str(tmp_path / "d")]) == 0  # fmt: skip
    table = pd.read_csv(tmp_path / "d.csv")
    user = table[table["defense_library"] == "user"]
    rows = set(zip(user["mode"], user["attack"], strict=True))
    assert {("none", "none"), ("transfer", "pgd"), ("white-box", "pgd"), ("worst-case", "all")} <= rows
    assert ("adaptive", "pgd-margin-bpda (1 restarts × 5 steps)") in rows
    assert (("adaptive", "pgd-margin-eot (1 restarts × 5 steps, 2 draws)") in rows) == (factory == "make_random")
    # the graph never reaches the input: white-box gradients are absent, said as an error row, not a number
    white_box = user[user["mode"] == "white-box"].iloc[0]
    assert white_box["status"] == "error" and "not have been used in the graph" in white_box["reason"]
    undefended = table[(table["defense_library"] == "undefended") & (table["mode"] == "none")]
    assert float(undefended["clean_acc"].iloc[0]) == pytest.approx(accuracy)
    assert _cache_entries() == before, "nothing is trained for a user's defense and twin"


def test_the_python_api_evaluates_the_users_model_and_defense_as_they_are(user_model, tmp_path):
    """The same through ``import advbridge``: compare, a registered defense on the user's model, and the user's
    defended module; nothing trained or cached, the clean accuracy the user measured."""
    import advbridge

    folder, accuracy = user_model
    namespace: dict = {}
    exec(compile(NET, "mynet", "exec"), namespace)
    net = namespace["make"]()
    net.load_state_dict(torch.load(folder / "net.pt", weights_only=True))
    x, y = load_tensors("mnist-5k", "test", n=16, seed=0)
    before = _cache_entries()
    run = advbridge.compare(net, x, y, attack="fgsm", libraries="own,torchattacks")
    assert run.table["clean_acc"].tolist() == pytest.approx([accuracy] * 2)
    median = advbridge.evaluate_defense("median", net, x, y, attack="fgsm", libraries="own", size=2,
                                        out=tmp_path / "median")  # fmt: skip
    assert {"none", "transfer", "white-box"} <= set(median.table["mode"]) and (tmp_path / "median.csv").exists()
    assert median.table["failed_training"].tolist() == pytest.approx([accuracy - 0.1] * len(median.table))

    class Binarized(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net  # declares no preprocess/classifier: no BPDA rows

        def forward(self, x):
            return self.net(advbridge.BitDepth(1)(x))

    module = advbridge.evaluate_defense(Binarized(net), net, x, y, attack="pgd", steps=3, libraries="own",
                                        restarts=1, autoattack=False)  # fmt: skip
    clean = module.table[(module.table["mode"] == "none")].set_index("defense_library")["robust_acc"]
    with torch.no_grad():
        own = float((Binarized(net)(x).argmax(1) == y).double().mean())
    assert clean["undefended"] == pytest.approx(accuracy) and clean["user"] == pytest.approx(own)
    assert _cache_entries() == before
    with pytest.raises(advbridge.AdvBridgeError, match="advbridge trains it on a dataset"):
        advbridge.evaluate_defense("adv-pgd", net, x, y)
    with pytest.raises(advbridge.AdvBridgeError, match="expected calibration= clean images"):
        advbridge.evaluate_defense("squeeze-detect", net, x, y)


def test_defend_takes_a_defense_or_a_defense_module_not_both(capsys):
    assert main(["defend", "--defense", "median", "--defense-module", "x.py:make", "--attack", "pgd"]) == 2
    assert main(["defend", "--attack", "pgd"]) == 2
    err = capsys.readouterr().err
    assert err.count("expected --defense NAME or --defense-module") == 2
