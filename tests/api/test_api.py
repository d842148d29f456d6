"""``import advbridge``: the README's Python example, and the API's table equal to the CLI's on the same model
and images."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import advbridge
from advbridge.cli import main


@pytest.mark.slow
def test_readme_python_example_runs_and_saves_what_the_cli_writes(mnist_model, mnist_batch, tmp_path):
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    # -- the README's example
    result = advbridge.compare(mnist_model, x, y, attack="deepfool", libraries="all")
    paths = result.save(tmp_path / "mine")
    # --
    assert list(result.table["library"]) == ["own", "art", "foolbox", "torchattacks", "advlib", "worst-case"]
    assert {p.name for p in paths} >= {"mine.csv", "mine-timing.csv", "mine.md", "mine.json", "mine-eps.csv"}
    saved = pd.read_csv(tmp_path / "mine.csv")
    assert saved["success_rate"].tolist() == pytest.approx(result.table["success_rate"].tolist())
    assert result.eps_table is not None and "worst-case" in result.eps_table.index


def test_readme_defense_example_runs(mnist_model, mnist_batch):
    """The README's ``evaluate_defense`` lines (fewer steps and restarts): a registered defense in each library
    that has it, and a defended module with its declared preprocessing attacked through BPDA."""
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    run = advbridge.evaluate_defense("median", mnist_model, x, y, attack="pgd", size=2, libraries="own,art", steps=5)
    assert set(run.table["defense_library"]) >= {"own", "art"} and "transfer" in set(run.table["mode"])
    defended = advbridge.PreprocessedClassifier(advbridge.BitDepth(1), mnist_model)
    run = advbridge.evaluate_defense(defended, mnist_model, x, y, attack="pgd", steps=5, restarts=1, autoattack=False)
    user = run.table[run.table["defense_library"] == "user"]
    assert "pgd-margin-bpda (1 restarts × 5 steps)" in set(user["attack"])
    # the clean row: the system's accuracy on these digits, computed here
    with torch.no_grad():
        clean = float((defended(x).argmax(1) == y).double().mean())
    assert user.loc[user["mode"] == "none", "robust_acc"].item() == pytest.approx(clean)
    # the worst case from the attacked rows alone (each robust only where the clean prediction is right):
    # robust only where every row left a sample robust, so at most the lowest row and at least clean accuracy
    # minus every row's broken share (the union bound); it names the rows it reduced
    attacked = user[user["mode"].isin(["transfer", "white-box", "adaptive"]) & (user["status"] == "ok")]
    worst = user[user["mode"] == "worst-case"]
    assert len(attacked) == 12  # 5 transfer, 5 white-box, margin PGD and its BPDA
    assert worst["reason"].item() == f"per sample, the worst over {len(attacked)} attacked rows"
    broken = (clean - attacked["robust_acc"]).sum()
    assert clean - broken - 1e-12 <= worst["robust_acc"].item() <= attacked["robust_acc"].min() + 1e-12


@pytest.mark.slow  # whole runs (the full suite)
@pytest.mark.usefixtures("deterministic")
def test_the_api_table_equals_the_cli_table_on_the_same_images(mnist_model, mnist_batch, tmp_path):
    """The CLI's first 16 seeded mnist-5k test digits on the committed classifier, given to the API as tensors
    and as a DataLoader: the same numbers in every result column."""
    assert main(["compare", "--attack", "pgd", "--n", "16", "--libraries", "own,torchattacks", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0  # fmt: skip
    cli = pd.read_csv(tmp_path / "cli.csv")
    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    for images, labels in ((x, y), (loader, None)):
        api = advbridge.compare(mnist_model, images, labels, attack="pgd", libraries=["own", "torchattacks"])
        for column in ("clean_acc", "success_rate", "robust_acc", "median_l2", "max_abs_diff_vs_own"):
            assert api.table[column].tolist() == pytest.approx(cli[column].tolist(), nan_ok=True), column
        assert api.table["dataset"].iloc[0] == "user" and float(api.table["n"].iloc[0]) == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attack": "cw"}, "unknown attack 'cw'"),
        ({"libraries": "own,cleverhans"}, "unknown library 'cleverhans'"),
        ({"labels": None}, "expected labels with an images tensor"),
        ({"images": "scale"}, "expected images in [0, 1]"),
        ({"labels": "many"}, "expected one label per image"),
        ({"labels": "eleven"}, "expected labels in 0..9"),
        ({"attack": "deepfool", "eps_grid": []}, "expected eps_grid as eps values > 0"),
        ({"batch_size": 0}, "expected batch_size as an int >= 1"),
    ],
)
def test_bad_input_raises_a_typed_error_before_any_attack(mnist_model, mnist_batch, kwargs, message, monkeypatch):
    import advbridge.experiments.compare as compare_module

    monkeypatch.setattr(compare_module, "compare_libraries", lambda *a, **k: pytest.fail("attacked on bad input"))
    x, y = mnist_batch[0][:4], mnist_batch[1][:4]
    images = {"scale": x * 255}.get(kwargs.pop("images", None), x)
    labels = {"many": torch.zeros(5, dtype=torch.long), "eleven": torch.full((4,), 11)}.get(kwargs.get("labels"), y)
    if "labels" in kwargs and kwargs.pop("labels") is None:
        labels = None
    with pytest.raises(advbridge.AdvBridgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        advbridge.compare(mnist_model, images, labels, **{"attack": "pgd", **kwargs})


@pytest.mark.slow  # whole runs (the full suite)
def test_readme_audit_example_runs(mnist_model, mnist_batch):
    """The README's ``advbridge.audit`` line (a short cascade): the bit-depth module, whose rounding has no
    gradient, audited with its twin: BPDA through its declared preprocessing, the cause named."""
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    defended = advbridge.PreprocessedClassifier(advbridge.BitDepth(1), mnist_model)
    report = advbridge.audit(defended, x, y, surrogate=mnist_model, libraries="own,advlib", autoattack=False,
                             minimal=False, steps=10, restarts=1, square_queries=20)  # fmt: skip
    assert report.verdict.startswith("worst-case robust accuracy")
    raised = report.indicators[report.indicators["raised"]].set_index("indicator")
    assert "unavailable_gradients" in raised.index and "bpda" in raised.loc["unavailable_gradients", "remedy"]
    assert {"pgd-margin-bpda", "pgd-margin-bpda-surrogate"} <= set(report.table["attack"])
