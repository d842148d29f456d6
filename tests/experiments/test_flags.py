"""Each gradient-masking flag fires on a model built to trip it and stays quiet on the plain CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbridge.defenses.preprocessor import BitDepth, PreprocessedClassifier
from advbridge.experiments import flags


class Softmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(1)


class Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.1 * torch.randn_like(x)).clamp(0, 1))


@pytest.fixture(scope="module")
def plain(mnist_workload):
    return mnist_workload.model, mnist_workload.x[:32], mnist_workload.y[:32]


def test_quiet_on_the_plain_cnn(plain):
    model, x, y = plain
    values = {**flags.model_flags(model, x, y), "zero_grad_share": flags.zero_gradient_share(model, x, y)}
    assert values["random_outputs"] == values["probability_outputs"] == values["zero_grad_share"] == 0.0
    assert values["saturated_softmax"] < 0.5  # a confident CNN saturates float32 on a few easy digits at most
    assert not any(flags.raised(name, value) for name, value in values.items())


def test_saturated_softmax_is_flagged_for_a_distilled_like_model(plain):
    """A network whose logits are T = 100 times larger (what training at T and testing at 1 gives)."""
    model, x, _ = plain

    class Hot(nn.Module):
        def forward(self, inputs):
            return 100 * model(inputs)

    value = flags.saturated_softmax(Hot(), x)
    assert value > 0.9 and flags.raised("saturated_softmax", value)


def test_bit_depth_without_bpda_has_zero_gradients(plain):
    model, x, y = plain
    exact = PreprocessedClassifier(BitDepth(1, backward="exact"), model)
    assert flags.zero_gradient_share(exact, x, y) == 1.0
    bpda = PreprocessedClassifier(BitDepth(1, backward="bpda"), model)
    assert flags.zero_gradient_share(bpda, x, y) == 0.0


def test_softmax_outputs_are_flagged(plain):
    model, x, _ = plain
    value = flags.probability_outputs(Softmax(model), x)
    assert value == 1.0 and flags.raised("probability_outputs", value)


def test_random_model_is_flagged_and_mode_restored(plain):
    """defend's random_outputs column is the audit's randomized indicator (AutoAttack's check_randomized): one
    measure and one threshold for both, so the same model gets the same judgement."""
    model, x, y = plain
    noisy = Noisy(model).train()
    value = flags.model_flags(noisy, x, y)["random_outputs"]
    assert value > 1e-4 and flags.raised("random_outputs", value)
    assert noisy.training
    assert not flags.raised("random_outputs", flags.randomized(model, x, y))


def test_value_flags():
    assert flags.raised("single_step_gap", flags.single_step_beats_iterative(0.2, 0.6))
    assert not flags.raised("single_step_gap", flags.single_step_beats_iterative(0.6, 0.2))
    assert flags.weaker_attack_beats_white_box(0.3, 0.5) == pytest.approx(0.2)
    assert flags.unbounded_incomplete(0.95) == pytest.approx(0.05)
    assert not flags.raised("unbounded_incomplete", flags.unbounded_incomplete(1.0))
    assert flags.non_monotone_eps([(0.1, 0.8), (0.3, 0.2), (0.2, 0.5)]) == 0.0
    assert flags.non_monotone_eps([(0.1, 0.8), (0.2, 0.3), (0.3, 0.6)]) == pytest.approx(0.3)


def _row(mode, attack, robust, library="own", **extra):
    base = {"dataset": "d", "model": "m", "defense": "D", "defense_library": library, "norm": "Linf", "eps": 0.1}
    return {**base, "mode": mode, "attack": attack, "attack_library": "own", "status": "ok", "robust_acc": robust,
            "success_rate": extra.pop("success_rate", 0.5), "detection_rate": float("nan"),
            "zero_grad_share": extra.pop("zero_grad_share", 0.0), **extra}  # fmt: skip


def test_table_flags_catch_catastrophic_overfitting_and_masking():
    import pandas as pd

    table = pd.DataFrame(
        [
            _row("none", "none", 0.8),
            _row("transfer", "fgsm", 0.5),
            _row("white-box", "fgsm", 0.7),  # FGSM on the model keeps 0.7 ...
            _row("adaptive", "pgd-margin", 0.05),  # ... while PGD collapses: catastrophic overfitting
            _row("white-box", "fgsm", 0.3, library="art"),
            _row("adaptive", "pgd-margin", 0.25, library="art"),  # an ordinary gap: quiet
        ]
    )
    flagged = flags.add_table_flags(table).set_index(["defense_library", "mode", "attack"])
    own_pgd, art_pgd = flagged.loc[("own", "adaptive", "pgd-margin")], flagged.loc[("art", "adaptive", "pgd-margin")]
    assert own_pgd["catastrophic_overfitting"] == pytest.approx(0.65) and "catastrophic_overfitting" in own_pgd["flags"]
    assert art_pgd["catastrophic_overfitting"] == 0.0 and art_pgd["flags"] == ""
    # the white-box FGSM leaves more than the transfer one: a weaker attack beats the white-box one
    own_fgsm = flagged.loc[("own", "white-box", "fgsm")]
    assert own_fgsm["weaker_beats_white_box"] == pytest.approx(0.2) and "weaker_beats_white_box" in own_fgsm["flags"]


def test_table_flags_single_step_unbounded_and_eps():
    import pandas as pd

    table = pd.DataFrame(
        [
            _row("white-box", "fgsm", 0.2),
            _row("white-box", "pgd", 0.6, zero_grad_share=0.4),  # iterative leaves more: masking
            _row("white-box", "deepfool", 0.1, eps=float("nan"), success_rate=0.9),
            _row("transfer", "pgd", 0.9, zero_grad_share=1.0),  # the source's gradient: not a flag of the row
            _row("white-box", "pgd", 0.7, eps=0.2),  # more accuracy at a larger eps
        ]
    )
    flagged = flags.add_table_flags(table)
    pgd = flagged.iloc[1]
    assert pgd["single_step_gap"] == pytest.approx(0.4)
    assert set(pgd["flags"].split(",")) >= {"single_step_gap", "zero_grad_share", "non_monotone_eps"}
    assert pgd["non_monotone_eps"] == pytest.approx(0.1)
    assert flagged.iloc[2]["unbounded_incomplete"] == pytest.approx(0.1)
    assert flagged.iloc[3]["flags"] == ""


def test_table_flags_name_every_row_of_a_model_that_did_not_learn():
    import pandas as pd

    twin = {"num_classes": 10, "accuracy": 0.98}
    collapsed = {"num_classes": 10, "accuracy": 0.075, "val_clean_accuracy": 0.09}
    checks = flags.training_checks(twin, own=collapsed, art={"num_classes": 10, "accuracy": 0.67})
    rows = [
        _row(mode, "pgd", 0.1, library=lib) for lib in ("undefended", "own", "art") for mode in ("none", "white-box")
    ]
    flagged = flags.add_table_flags(pd.DataFrame(rows), checks)
    for _, row in flagged.iterrows():
        own = row["defense_library"] == "own"
        assert ("failed_training" in row["flags"].split(",")) == own, row
        expected = {"undefended": 0.88, "own": -0.01, "art": 0.57}[row["defense_library"]]
        assert row["failed_training"] == pytest.approx(expected)
    assert flags.raised("failed_training", 0.01) and not flags.raised("failed_training", 0.06)


def test_a_generator_that_did_not_learn_flags_the_defended_rows_only():
    import pandas as pd

    classifier = {"num_classes": 10, "accuracy": 0.98}
    generator = {"kind": "generator", "test_reconstruction": 50.0, "mean_image_reconstruction": 50.0}
    checks = flags.training_checks(classifier, generator)
    rows = [_row("none", "none", 0.9, library="undefended"), _row("white-box", "pgd", 0.5, library="own")]
    flagged = flags.add_table_flags(pd.DataFrame(rows), checks)
    assert flagged["flags"].tolist() == ["", "failed_training"]
    assert flagged["failed_training"].tolist() == pytest.approx([0.88, 0.0])


def test_the_report_names_the_model_that_did_not_learn():
    from advbridge.experiments.defend.report import failed_training_note

    classifier = {"num_classes": 10, "accuracy": 0.98}
    generator = {"kind": "generator", "test_reconstruction": 60.0, "mean_image_reconstruction": 50.0}
    note = failed_training_note(flags.training_checks(classifier, generator))
    assert note.startswith("> **No defense was evaluated for the defended system**: its generator did not learn (")
    assert failed_training_note(flags.training_checks(classifier)) == ""
