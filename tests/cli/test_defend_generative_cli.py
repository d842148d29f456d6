"""``cli.py defend`` with a generative defense, end to end on the committed classifier and a tiny
generator: every mode, the files (tables, JSON with the generator's card and the checks, figures)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from advbridge.cli import main

# every test trains a generator (`defend --defense vae-purify` ...)
pytestmark = pytest.mark.slow

TINY = ["--n", "8", "--gen-epochs", "1", "--gen-max-train", "256", "--restarts", "1", "--quiet"]


@pytest.mark.parametrize(
    ("defense", "extra", "files"),
    [
        ("vae-purify", ["--sample", "--eot", "2"], [".csv", ".md", ".json", ".png", "-images.png"]),
        ("cvae-label", ["--refine-steps", "2"], [".csv", ".md", ".json", ".png", "-images.png"]),
        ("recon-detect", ["--calibration-n", "32"], [".csv", ".md", ".json", ".png", "-images.png", "-roc.png", "-scores.png"]),
    ],
)  # fmt: skip
def test_defend_generative_writes_every_mode_and_file(tmp_path, capsys, mnist_workload, defense, extra, files):
    out = tmp_path / "g"
    argv = ["defend", "--defense", defense, "--attack", "pgd", "--steps", "3", "--libraries", "own,torchattacks"]
    assert main([*argv, *extra, *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(f"{out}.csv")
    assert set(table["defense_library"]) == {"undefended", "own"}
    own = table[table["defense_library"] == "own"]
    expected = {"none", "transfer", "adaptive", "worst-case"} | ({"white-box"} if defense != "recon-detect" else set())
    assert set(own["mode"]) == expected and (table["status"] == "ok").all(), table[["mode", "reason"]]
    worst = own.loc[own["mode"] == "worst-case", "robust_acc"].item()
    assert worst <= own.loc[own["mode"] != "none", "robust_acc"].min() + 1e-12
    adaptive = own.loc[own["mode"] == "adaptive", "attack"].tolist()
    if defense == "vae-purify":
        assert adaptive == ["pgd-margin end to end (1 restarts × 3 steps, EOT 2)"]
    if defense == "cvae-label":
        assert len(adaptive) == 2 and "BPDA over the refinement" in adaptive[1]
    info = json.loads((tmp_path / "g.json").read_text())
    assert (
        info["generator_card"]["generator"]
        == {"vae-purify": "vae", "cvae-label": "cvae", "recon-detect": "ae"}[defense]
    )
    assert info["files"] == [f"g{tail}" for tail in files]
    if defense == "vae-purify":
        assert "random_outputs" in info["checks"] and "checks: random_outputs" in printed
    for name in info["files"]:
        assert (tmp_path / name).stat().st_size > 0 and str(tmp_path / name) in printed
