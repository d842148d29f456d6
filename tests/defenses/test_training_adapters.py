"""ART's trainers through the adapter: our budget on ART's scale, its probability and temperature traps
handled, each library's model cached apart; and the evaluation of trained defenses (AutoAttack, the
masking of distillation, the catastrophic-overfitting check) on models whose behaviour is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixture_models import MNIST_CNN
from torch import nn

from advbridge.bridge.adapters import get_adapter
from advbridge.bridge.adapters.art import (
    _adversarial_trainer,
    _Probabilities,
    _ProbabilityCrossEntropy,
    _training_classifier,
)
from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.errors import UnsupportedDefenseError
from advbridge.bridge.spec import AttackSpec
from advbridge.bridge.training import train_defended
from advbridge.defenses.trainer import recipe_defaults
from advbridge.experiments.defend.trained import UNDEFENDED, TrainedEvaluation
from advbridge.experiments.engine import Cell, EvaluationOptions
from advbridge.own_attacks import pgd
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train, initial_model
from advbridge.zoo.training_data import training_data

WEIGHTS = str(MNIST_CNN / "model.safetensors")


def tiny_config(**changes) -> TrainConfig:
    fields = {"dataset": "mnist-5k", "model": "advbridge_mnist_cnn", "epochs": 1, "max_train": 1024}
    return TrainConfig(**{**fields, "weights": WEIGHTS, "lr": 1e-3, **changes}).resolved()


@pytest.fixture(scope="module")
def fresh_model():
    cfg = tiny_config()
    model, _ = initial_model(cfg, training_data(cfg).info)
    return model


@pytest.mark.parametrize(
    ("fields", "trainer", "attack"),
    [
        ({"defense": "adv-pgd", "steps": 7}, "AdversarialTrainerMadryPGD", "ProjectedGradientDescent"),
        ({"defense": "adv-pgd", "norm": "L2", "eps": 2.0}, "AdversarialTrainer", "ProjectedGradientDescent"),
        ({"defense": "adv-fgsm"}, "AdversarialTrainer", "FastGradientMethod"),
    ],
)
def test_art_trainers_get_our_budget_on_the_0_1_scale(fresh_model, fields, trainer, attack):
    spec = TrainingDefenseSpec(**fields).resolved("mnist")
    classifier = _training_classifier(fresh_model, tiny_config(), training_data(tiny_config()).info)
    built = _adversarial_trainer(spec, classifier, 128)
    assert type(built).__name__ == trainer
    inner = built.trainer if trainer == "AdversarialTrainerMadryPGD" else built
    (art_attack,) = inner.attacks
    assert type(art_attack).__name__ == attack
    assert art_attack.eps == spec.eps and art_attack.batch_size == 128  # not Madry's 0-255 defaults, not 32
    assert inner.ratio == spec.ratio
    if attack == "ProjectedGradientDescent":
        assert art_attack.eps_step == spec.step_size and art_attack.max_iter == spec.steps
        assert art_attack.norm == (np.inf if spec.norm == "Linf" else 2) and art_attack.num_random_init == 1
    assert classifier.clip_values.tolist() == [0.0, 1.0]


def test_art_distillation_models_output_probabilities_and_the_loss_has_no_second_softmax(fresh_model, mnist_batch):
    from art.utils import is_probability

    x, y = mnist_batch[0][:16], mnist_batch[1][:16]
    temperature = 20.0
    probabilities = _Probabilities(fresh_model, temperature)
    with torch.no_grad():
        p, z = probabilities(x), fresh_model(x)
    assert all(is_probability(row) for row in p.numpy())
    one_hot = F.one_hot(y, 10).float()
    ours = _ProbabilityCrossEntropy()(p, one_hot)
    assert math.isclose(float(ours), float(F.cross_entropy(z / temperature, y)), rel_tol=1e-5)
    # the trap: nn.CrossEntropyLoss on probabilities applies a second softmax, a different (flat) loss
    assert abs(float(nn.CrossEntropyLoss()(p, y)) - float(ours)) > 0.01


def test_art_refuses_what_it_cannot_train_with_the_reason():
    art = get_adapter("art")
    rs = TrainingDefenseSpec(defense="adv-fgsm-rs", step_size=0.1).resolved("mnist")
    assert "1.25·eps" in art.training_unsupported_reason(rs, tiny_config())
    pgd_spec = TrainingDefenseSpec(defense="adv-pgd").resolved("mnist")
    assert "augmentation" in art.training_unsupported_reason(pgd_spec, tiny_config(augment=True))
    assert "does not clip gradients" in art.training_unsupported_reason(pgd_spec, tiny_config(clip_grad_norm=1.0))
    distill = TrainingDefenseSpec(defense="distill").resolved("mnist")
    assert "cosine only" in art.training_unsupported_reason(distill, tiny_config(schedule="cyclic"))
    fast = TrainingDefenseSpec(defense="adv-fgsm-rs").resolved("mnist")
    # FBF imposes Wong et al.'s recipe: refused with Adam and a cosine, accepted with the recipe itself
    reason = art.training_unsupported_reason(fast, tiny_config())
    assert "imposes Wong et al.'s recipe (optimizer sgd, schedule cyclic, lr 0.21, clip_grad_norm 0.5)" in reason
    assert "got optimizer adam, schedule cosine, lr 0.001, clip_grad_norm None" in reason
    assert art.training_unsupported_reason(fast, tiny_config(**recipe_defaults(fast))) is None
    with pytest.raises(UnsupportedDefenseError, match="foolbox cannot train adv-pgd"):
        train_defended(tiny_config(), TrainingDefenseSpec(defense="adv-pgd"), library="foolbox", progress=False)


def _robust_accuracy(model, x, y, eps):
    x_adv = pgd(model, x, y, eps=eps, steps=10)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).double().mean())


@pytest.mark.slow
def test_art_madry_training_is_real_and_cached_apart_from_ours(tmp_path, monkeypatch):
    from advbridge.zoo.datasets import load_tensors

    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    x, y = load_tensors("mnist-5k", "test", n=128, seed=0)
    spec = TrainingDefenseSpec(defense="adv-pgd", steps=5)
    plain, _ = get_or_train(tiny_config(), progress=False)
    art_model, card = train_defended(tiny_config(), spec, library="art", progress=False)
    assert card["defense"]["trainer"] == "art" and card["art_trainer"] == "AdversarialTrainerMadryPGD"
    assert "ART's trainers neither validate" in card["validation"] and card["train_samples"] == 1024
    # measured: 0.34 (plain) vs 0.52 (ART Madry PGD-5, one epoch of 1,024 digits) at L∞ 0.15
    assert _robust_accuracy(art_model, x, y, 0.15) >= _robust_accuracy(plain, x, y, 0.15) + 0.1
    folders = {p.name for p in (tmp_path / "models").iterdir()}
    assert len(folders) == 2  # plain and ART's; ours would be a third
    import advbridge.bridge.adapters.art as art_module

    monkeypatch.setattr(art_module, "_train_with_art", lambda *a, **k: pytest.fail("must come from the cache"))
    again, _ = train_defended(tiny_config(), spec, library="art", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), art_model.state_dict().values()))


class _Scaled(nn.Module):
    """``model``'s logits times ``factor``: a distilled model's saturated softmax without the training."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def _cells(evaluation, library):
    return {(c.mode, c.attack or c.attack_library): c for c in evaluation.cells if c.defense_library == library}


def _acc(cell):
    return float(cell.robust.double().mean())


@pytest.mark.slow
def test_distillation_masking_is_seen_and_broken(mnist_model, mnist_batch):
    """Logits ×100 saturate the softmax at T = 1 as distillation at T = 100 does: cross-entropy PGD stalls
    (zero gradients), the margin loss, CE on z/T and DeepFool do not."""
    x, y = mnist_batch[0][:32], mnist_batch[1][:32]
    spec = TrainingDefenseSpec(defense="distill", temperature=100).resolved("mnist")
    attack = AttackSpec(attack="pgd", eps=0.2, steps=20)
    evaluation = TrainedEvaluation(
        spec, attack, mnist_model, {"own": _Scaled(mnist_model, 100.0)}, x, y,
        num_classes=10, options=EvaluationOptions(["own"], restarts=2),
    )  # fmt: skip
    evaluation.run()
    plain, distilled = _cells(evaluation, UNDEFENDED), _cells(evaluation, "own")
    assert distilled[("white-box", "own")].zero_grad_share > 0.5 > plain[("white-box", "own")].zero_grad_share
    assert _acc(distilled[("white-box", "own")]) > _acc(plain[("white-box", "own")]) + 0.3
    margin = next(c for k, c in distilled.items() if k[1].startswith("pgd-margin"))
    scaled = next(c for k, c in distilled.items() if k[1].startswith("pgd-ce(z/T)"))
    deepfool = next(c for k, c in distilled.items() if k[1].startswith("deepfool"))
    for cell in (margin, scaled, deepfool):
        assert _acc(cell) <= _acc(next(c for k, c in plain.items() if k[1] == cell.attack)) + 0.05, cell.attack
    assert _acc(distilled[("worst-case", "all")]) <= min(_acc(margin), _acc(scaled), _acc(deepfool))
    assert "success unbounded" in deepfool.reason


def test_catastrophic_overfitting_is_flagged_when_fgsm_accuracy_is_far_above_pgd():
    spec = TrainingDefenseSpec(defense="adv-fgsm").resolved("mnist")
    attack = AttackSpec(attack="pgd", eps=0.3, steps=10)
    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    evaluation = TrainedEvaluation(
        spec, attack, nn.Identity(), {}, x, y, num_classes=10, options=EvaluationOptions(["own"])
    )
    ok = torch.ones(4, dtype=torch.bool)
    for name, robust in (("fgsm", [1, 1, 1, 0]), ("pgd-margin (10 restarts × 10 steps)", [0, 0, 0, 0])):
        cell = Cell("own", "adaptive", "own", attack=name, clean_ok=ok, robust=torch.tensor(robust, dtype=torch.bool))
        evaluation.cells.append(cell)
    evaluation.overfitting_check("own")
    check = evaluation.checks["own"]
    assert check["catastrophic_overfitting"] and check["gap"] == 0.75
    assert "catastrophic overfitting: FGSM acc 0.750 vs PGD 0.000" in evaluation.cells[-1].reason
    evaluation.cells[0].robust = torch.zeros(4, dtype=torch.bool)
    evaluation.overfitting_check("own")
    assert not evaluation.checks["own"]["catastrophic_overfitting"]
    # an ordinary gap (measured on ART's FBF model: FGSM 0.89, PGD 0.70) is not catastrophic overfitting
    evaluation.cells[0].robust = torch.tensor([1, 1, 1, 1], dtype=torch.bool)
    evaluation.cells[1].robust = torch.tensor([1, 1, 1, 0], dtype=torch.bool)
    evaluation.overfitting_check("own")
    assert evaluation.checks["own"]["gap"] == 0.25 and not evaluation.checks["own"]["catastrophic_overfitting"]
    evaluation.cells[0].robust = torch.ones(4, dtype=torch.bool)
    evaluation.checks.clear()
    evaluation.spec = TrainingDefenseSpec(defense="distill").resolved("mnist")
    evaluation.overfitting_check("own")
    assert evaluation.checks == {}, "the check is for FGSM-trained models only"


def test_autoattack_through_the_torchattacks_adapter(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    mnist_model.train()
    x_adv = get_adapter("torchattacks").autoattack(mnist_model, x, y, norm="Linf", eps=0.3, num_classes=10)
    assert mnist_model.training, "the caller's mode is restored"
    mnist_model.eval()
    assert float((x_adv - x).abs().max()) <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert float((mnist_model(x_adv).argmax(1) == y).double().mean()) <= 0.125
