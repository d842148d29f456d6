"""The audit's report card: ``<out>-card.json`` in the shape of a RobustBench leaderboard entry plus the audit's own
fields (each row's contribution to the worst case, the indicators, the binarization test when there is one, cost,
versions, seeds), strict JSON written atomically beside the other files; the ``.md`` card headed by the audited
system, its surrogate beside it, and the headline numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from advbridge.experiments.audit.card import card, contributions, eps_text, markdown_card
from advbridge.experiments.audit.report import TAILS, write_audit
from advbridge.experiments.audit.results import NAIVE, Audit, AuditConfig, AuditRow
from advbridge.experiments.core.indicators import INDICATORS, IndicatorResult

BROKEN = Path(__file__).resolve().parent / "broken_defenses.py"
#: RobustBench's leaderboard entry (model_info/<dataset>/<threat_model>/<name>.json), every field present.
ROBUSTBENCH = {"name", "architecture", "dataset", "eps", "clean_acc", "autoattack_acc", "external", "reported",
               "unreliable", "footnote", "link", "authors", "venue", "additional_data", "number_forward_passes"}  # fmt: skip


def row(attack: str, robust: list[bool], stage: str = NAIVE, indicators: tuple[str, ...] = ()) -> AuditRow:
    """An ok row: per sample still robust or not, one forward and one backward per sample."""
    n = len(robust)
    result = AuditRow(attack, "own", stage, indicators=indicators, seconds=1.0)
    result.robust = torch.tensor(robust)
    result.distance = torch.where(result.robust, torch.full((n,), math.inf), torch.zeros(n)).double()
    result.forward, result.backward = torch.ones(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    return result


def synthetic(indicators: dict[str, IndicatorResult] | None = None) -> Audit:
    """Six samples, the last misclassified: fgsm breaks 0, 1; pgd 1, 2; a remedy row 3 (alone); sample 4 survives."""
    clean = torch.tensor([True, True, True, True, True, False])
    rows = [
        row("fgsm", [False, False, True, True, True, False]),
        row("pgd", [True, False, False, True, True, False]),
        AuditRow("autoattack", "torchattacks", NAIVE, status="unsupported", reason="AutoAttack standard needs ..."),
        row("apgd-ce", [True, False, True, True, True, False]),
        row("pgd-margin", [True, True, True, False, True, False], stage="margin", indicators=("silent_success",)),
    ]
    config = AuditConfig(norm="Linf", eps=8 / 255, libraries=("own",))
    return Audit(config, clean, rows, indicators or {}, num_classes=10, seconds=3.0)


def test_each_row_s_contribution_first_and_unique():
    records = {r["row"]: r for r in contributions(synthetic())}
    assert [records[f"{a} | own | naive"]["first"] for a in ("fgsm", "pgd", "apgd-ce")] == [2, 1, 0]
    assert [records[f"{a} | own | naive"]["unique"] for a in ("fgsm", "pgd", "apgd-ce")] == [1, 1, 0]
    assert (
        records["pgd-margin | own | margin"] | {"first": 1, "unique": 1, "broke": 1}
        == records["pgd-margin | own | margin"]
    )
    assert records["autoattack | torchattacks | naive"] == {
        "row": "autoattack | torchattacks | naive", "attack": "autoattack", "library": "torchattacks", "stage": NAIVE,
        "status": "unsupported", "reason": "AutoAttack standard needs ...",
    }  # fmt: skip
    audit = synthetic()
    broken = int(audit.clean.sum()) - int(audit.robust_under().sum())
    assert sum(r.get("first", 0) for r in records.values()) == broken == 4


def test_card_numbers_are_robustbench_s_fields_and_the_audit_s():
    summary = card(synthetic(), {"model": "resnet18", "dataset": "cifar10", "audited": "median", "data_seed": 3})
    assert ROBUSTBENCH <= set(summary)
    assert (summary["eps"], summary["threat_model"], summary["architecture"]) == ("8/255", "Linf", "resnet18")
    assert summary["clean_acc"] == "83.33" and summary["external"] == "16.67"  # 5 of 6 clean; sample 4 survives
    assert summary["autoattack_acc"] is None and summary["autoattack"]["status"] == "unsupported"
    assert summary["autoattack"]["instead"] == [
        {"row": "apgd-ce | own | naive", "robust_accuracy": pytest.approx(4 / 6)}
    ]
    assert summary["best_adaptive"] == {"row": "pgd-margin | own | margin", "robust_accuracy": pytest.approx(4 / 6),
                                        "remedy_for": ["silent_success"]}  # fmt: skip
    assert summary["worst_case"]["robust_accuracy"] == pytest.approx(1 / 6)
    assert summary["worst_case"]["naive"] == pytest.approx(2 / 6)
    assert summary["cost"]["seconds_per_sample"] == pytest.approx(0.5)
    assert summary["seeds"] == {"attacks": 0, "data": 3}
    assert {"torch", "torchattacks", "advbridge", "python"} <= set(summary["versions"]) and summary["git_revision"]
    assert summary["unreliable"] is False and summary["binarization_test"] is None
    json.dumps(summary, allow_nan=False)  # strict JSON: NaN and infinities are null


def test_unreliable_and_a_binarization_entry_are_read_from_the_indicator_table():
    silent = INDICATORS["silent_success"].measure(0.5)
    silent.after = 0.5  # the remedy did not clear it
    binarization = IndicatorResult("binarization_test", 0.4, 0.95, True, "the strongest remedies", "Zimmermann 2022")
    summary = card(synthetic({"silent_success": silent, "binarization_test": binarization}))
    assert summary["unreliable"] is True and summary["unreliable_because"] == ["silent_success"]
    assert summary["binarization_test"]["indicator"] == "binarization_test"
    assert summary["binarization_test"]["value"] == 0.4 and summary["binarization_test"]["raised"] is True
    names = [i["indicator"] for i in summary["indicators"]]
    assert names == ["silent_success", "binarization_test"]
    assert summary["indicators"][0]["value_after_remedy"] == 0.5 and summary["indicators"][0]["stayed_raised"]


@pytest.mark.parametrize(
    ("eps", "text"), [(8 / 255, "8/255"), (0.3, "0.3"), (0.5, "0.5"), (2 / 255, "2/255"), (1.0, "1")]
)
def test_eps_is_written_as_robustbench_writes_it(eps, text):
    assert eps_text(eps) == text


def test_files_are_written_atomically_beside_the_others_and_touch_nothing_else(tmp_path):
    other = tmp_path / "other-run.json"
    other.write_text("{}")
    paths = write_audit(synthetic(), tmp_path / "run", {"model": "m", "dataset": "d"})
    assert sorted(p.name for p in paths) == sorted(f"run{tail}" for tail in TAILS.values())
    assert len(set(TAILS.values())) == len(TAILS) and TAILS["card"] not in (TAILS["metadata"], TAILS["markdown"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, *(p.name for p in paths)])  # no .tmp
    assert other.read_text() == "{}"
    summary = json.loads((tmp_path / "run-card.json").read_text(), parse_constant=pytest.fail)
    assert summary["files"] == sorted(summary["files"], key=[p.name for p in paths].index)
    metadata = json.loads((tmp_path / "run.json").read_text())
    assert metadata["worst_case_robust_accuracy"] == pytest.approx(summary["worst_case"]["robust_accuracy"])


def test_markdown_card_headline_first():
    audit = synthetic()
    audit.warnings.append("the model seems to expect normalized inputs: ...")
    from advbridge.experiments.audit.tables import indicator_table, results_table

    context = {"model": "resnet18", "dataset": "cifar10", "system": "median in front of resnet18",
               "surrogate": "resnet18"}  # fmt: skip
    text = markdown_card(audit, context, indicator_table(audit),
                         results_table(audit))  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "# Audit: median in front of resnet18 on cifar10 (surrogate: resnet18)"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    values = [c.strip() for c in lines[4].strip("|").split("|")]
    assert header == ["clean", "AutoAttack", "best adaptive", "worst case", "unreliable"]
    assert values == ["0.8333", "— (unsupported)", "0.6667", "**0.1667**", "no"]
    assert lines[6].startswith("**worst-case robust accuracy 0.1667")
    assert "> warning: the model seems to expect normalized inputs: ..." in lines
    assert text.index("## What broke the model") < text.index("## All indicators") < text.index("## Rows")


@pytest.mark.slow  # a whole CLI audit (the full suite)
def test_cli_card_names_the_audited_module_and_its_surrogate(tmp_path, capsys):
    """``--defense-module X --surrogate Y``: titled with X, Y beside it (not "Audit: Y")."""
    from advbridge.cli import main

    module = f"{BROKEN}:saturated"
    fast = ["--n", "8", "--libraries", "own", "--no-autoattack", "--no-minimal", "--square-queries", "20",
            "--steps", "5", "--restarts", "1", "--quiet"]  # fmt: skip
    out = tmp_path / "sat"
    assert main(["audit", "--defense-module", module, "--surrogate", "advbridge_mnist_cnn", *fast,
                 "--out", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith(f"audit of {module} (Linf eps=0.3)")
    title = (tmp_path / "sat.md").read_text().splitlines()[0]
    assert title == f"# Audit: {module} on mnist-5k (surrogate: advbridge_mnist_cnn)"
    summary = json.loads((tmp_path / "sat-card.json").read_text())
    assert (summary["name"], summary["surrogate"], summary["architecture"]) == (module, "advbridge_mnist_cnn",
                                                                               "advbridge_mnist_cnn")  # fmt: skip
    assert summary["unreliable"] is False and any(r["row"].startswith("pgd-margin") for r in summary["rows"])
    # in the cascade a remedy row attacks what was left: no robust accuracy of its own on the card
    assert summary["best_adaptive"] is None and "— (in the cascade)" in (tmp_path / "sat.md").read_text()
    assert float(summary["external"]) <= float(summary["clean_acc"])


def test_system_label_names_the_defense_and_the_model():
    from advbridge.experiments.audit.command import system_label

    assert system_label(None, None, None, "advbridge_mnist_cnn") == "advbridge_mnist_cnn"
    assert system_label("squeezer", "median", None, "m") == "median in front of m"
    assert system_label("detector", "squeeze-detect", None, "m") == "squeeze-detect beside m"
    assert system_label("training", "adv-pgd", None, "m") == "adv-pgd trained from m"
    assert system_label(None, None, "x.py:make", "m") == "x.py:make"


def test_autoattack_s_number_is_its_own_on_every_sample_or_none():
    """In the cascade AutoAttack's row attacks only what earlier rows left: its robust accuracy there is not
    AutoAttack's, so the card takes AutoAttack alone (--versus-autoattack) or, without it, reports none."""
    audit = synthetic()
    cascade_row = row("autoattack", [True, True, True, True, True, False])
    cascade_row.asked = torch.tensor([False, False, False, True, True, False])  # what fgsm and pgd left
    audit.rows[2] = cascade_row
    entry = card(audit)
    assert (
        entry["autoattack_acc"] is None and "on the 2 samples no earlier row broke" in entry["autoattack"]["measured"]
    )
    cascade_row.asked = None  # the row attacked every sample: its number is AutoAttack's
    assert card(audit)["autoattack_acc"] == "83.33"
    audit.autoattack_alone = {"robust_accuracy": 0.5, "propagations_per_sample": 7.0, "seconds": 1.0}
    entry = card(audit)
    assert entry["autoattack_acc"] == "50.00" and entry["autoattack"]["propagations_per_sample"] == 7.0
