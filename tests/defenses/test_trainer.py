"""Training-time defenses on a tiny budget (fine-tuning the committed classifier on 1,024-2,048 digits): they
must not be no-ops. Adversarial training's examples are adversarial and the caller's modes come back; the
adversarially trained model is more robust than its plain twin; the distilled student is not its teacher
and is much sharper at T = 1 (the saturation that masks gradients)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from fixture_models import MNIST_CNN

from advbridge.bridge.defense_spec import TrainingDefenseSpec
from advbridge.bridge.errors import AdvBridgeError, InvalidParameterError, UnknownNameError
from advbridge.bridge.training import train_defended
from advbridge.cli import main
from advbridge.defenses.trainer import AdversarialObjective, adversarial_examples, fast_fgsm
from advbridge.own_attacks import pgd
from advbridge.zoo.train_config import TrainConfig
from advbridge.zoo.training import get_or_train

WEIGHTS = str(MNIST_CNN / "model.safetensors")


def tiny_config(**changes) -> TrainConfig:
    fields = {"dataset": "mnist-5k", "model": "advbridge_mnist_cnn", "epochs": 1, "max_train": 1024}
    return TrainConfig(**{**fields, "weights": WEIGHTS, "lr": 1e-3, **changes})


@pytest.fixture(scope="module")
def test_digits():
    from advbridge.zoo.datasets import load_tensors

    return load_tensors("mnist-5k", "test", n=128, seed=0)


def _refuse(*args):
    raise AssertionError("the teacher must come from the cache")


def _robust_accuracy(model, x, y, eps):
    x_adv = pgd(model, x, y, eps=eps, steps=10)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).double().mean())


def test_training_examples_are_adversarial_and_every_module_mode_is_restored(mnist_model, mnist_batch):
    import copy

    model = copy.deepcopy(mnist_model).train()
    model.backbone.get_classifier().eval()  # a mixed state, as head-only fine-tuning leaves it
    before = [m.training for m in model.modules()]
    seen = []
    hook = model.register_forward_hook(lambda m, a, o: seen.append(m.training))
    x, y = mnist_batch[0][:32], mnist_batch[1][:32]
    for name in ("adv-fgsm", "adv-fgsm-rs", "adv-pgd"):
        spec = TrainingDefenseSpec(defense=name, steps=5).resolved("mnist")
        x_adv = adversarial_examples(model, x, y, spec)
        assert [m.training for m in model.modules()] == before, name
        assert seen and not any(seen), f"{name}: the model must be attacked in eval mode"
        seen.clear()
        with torch.no_grad():
            model.eval()
            clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
            model.train()
            model.backbone.get_classifier().eval()
        assert adv > clean, (name, float(clean), float(adv))
        assert float((x_adv - x).abs().max()) <= spec.eps + 1e-6
    hook.remove()


def test_fast_fgsm_starts_outside_the_image_range_as_wong_et_al(mnist_model):
    """Alg. 3 of Wong et al.: the uniform start is not clipped into [0, 1], so on a black image a third of the
    pixels pushed up end strictly inside the ball; a start clipped first would put every one on its corner."""
    x, y = torch.zeros(16, 1, 28, 28), torch.arange(16) % 10
    torch.manual_seed(0)
    x_adv = fast_fgsm(mnist_model.eval(), x, y, eps=0.3, step_size=0.375)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 0.3 + 1e-6
    pushed = x_adv > 0
    inside = (x_adv[pushed] < 0.3 - 1e-6).double().mean()
    assert 0.25 < float(inside) < 0.5, float(inside)  # expected 0.225 / 0.6 = 0.375 of them


@pytest.mark.slow
def test_adversarially_trained_model_is_more_robust_than_its_plain_twin(test_digits, tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    x, y = test_digits
    plain, _ = get_or_train(tiny_config(), progress=False)
    trained, card = train_defended(tiny_config(), TrainingDefenseSpec(defense="adv-fgsm-rs"), progress=False)
    resolved = TrainingDefenseSpec(defense="adv-fgsm-rs").resolved("mnist", warm_start=True)
    assert card["defense"] == {**resolved.to_dict(), "revision": 2}  # Wong et al.'s Alg. 3 as written
    assert {"clean_acc", "adv_acc", "val_acc"} <= set(card["history"][0])
    assert card["validation"].startswith("PGD-10 accuracy "), card["validation"]  # not "PGD-100"
    # measured: 0.34 (plain) vs 0.53 (FGSM-RS trained) at L∞ 0.15 on these 128 digits, after one epoch
    assert _robust_accuracy(trained, x, y, 0.15) >= _robust_accuracy(plain, x, y, 0.15) + 0.1
    # the same spec, spelt differently, is the same cached model
    again, _ = train_defended(tiny_config(), TrainingDefenseSpec(defense="adv-fgsm-rs", eps=0.3), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), trained.state_dict().values()))


@pytest.mark.slow
def test_distilled_student_differs_from_its_teacher_and_saturates(test_digits, tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    x, y = test_digits
    config = tiny_config(epochs=2, max_train=2048, lr=None)  # the model's default rate: logits grow to ~T
    spec = TrainingDefenseSpec(defense="distill", temperature=100)
    student, card = train_defended(config, spec, progress=False)
    teacher_key = {"defense": "distill-teacher", "temperature": 100.0}  # cached by train_defended: not retrained
    teacher, teacher_card = get_or_train(config, progress=False, objective=_refuse, defense=teacher_key)
    assert card["teacher_sha256"] == teacher_card["sha256"]
    plain, _ = get_or_train(config, progress=False)
    with torch.no_grad():
        s, t, p = student(x), teacher(x), plain(x)

    def entropy(logits):
        probs = logits.softmax(1)
        return float(-(probs * probs.clamp_min(1e-30).log()).sum(1).mean())

    assert not torch.allclose(s, t, atol=1e-3), "the student is trained, not copied"
    # measured: entropy 0.006 (student at T = 1) vs 0.094 (plain twin), logit std 223 vs 4.9
    assert entropy(s) < entropy(p) / 3 and float(s.std()) > 10 * float(p.std())
    assert float((s.argmax(1) == y).double().mean()) > 0.5


@pytest.mark.parametrize(
    ("fields", "message", "error"),
    [
        ({"defense": "adv-pdg"}, "unknown training defense 'adv-pdg'; did you mean 'adv-pgd'", UnknownNameError),
        ({"defense": "distill", "temperature": 0}, "expected temperature > 0, got 0", InvalidParameterError),
        ({"defense": "adv-fgsm", "ratio": 0}, "expected ratio in (0, 1]", InvalidParameterError),
        ({"defense": "adv-fgsm", "ratio": 1.5}, "got 1.5", InvalidParameterError),
        ({"defense": "adv-pgd", "eps": 0}, "expected eps > 0, got 0", InvalidParameterError),
        ({"defense": "adv-pgd", "steps": 0}, "expected steps >= 1", InvalidParameterError),
        ({"defense": "adv-fgsm", "norm": "L2"}, "expected norm Linf for adv-fgsm", InvalidParameterError),
    ],
)
def test_bad_training_defense_is_one_line(fields, message, error):
    with pytest.raises(error) as info:
        TrainingDefenseSpec(**fields)
    assert isinstance(info.value, AdvBridgeError) and message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--defense", "distill", "--temperature", "-1"], "expected --temperature as a finite number > 0, got -1.0"),
        (["--defense", "adv-fgsm", "--ratio", "2"], "expected --ratio as a finite number in (0, 1], got 2.0"),
        (["--defense", "adv-pgd", "--eps", "0"], "expected --eps as a finite number > 0"),
        (["--defense", "adv-pgd", "--norm", "L3"], "unknown norm 'L3'"),
        (["--defense", "adv-pgd", "--library", "foolbox"], "foolbox cannot train adv-pgd"),
        (["--defense", "adv-pgd", "--library", "artt"], "unknown library 'artt'; did you mean 'art'"),
    ],
)
def test_cli_train_bad_defense_exits_2(extra, message, capsys):
    assert main(["train", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_fast_training_defaults_to_wong_et_al_s_recipe_and_given_options_win():
    from advbridge.experiments.options import recipe
    from advbridge.zoo.train_config import FAST_RECIPE

    fast = TrainingDefenseSpec(defense="adv-fgsm-rs").resolved("mnist")
    assert recipe(fast, lr=None, epochs=5) == {**FAST_RECIPE, "epochs": 5}
    assert recipe(fast, lr=0.05, optimizer=None)["lr"] == 0.05
    assert recipe(TrainingDefenseSpec(defense="adv-pgd").resolved("mnist"), lr=None, epochs=3) == {"epochs": 3}


def test_the_eps_ramp_grows_the_budget_linearly_then_holds_it():
    spec = TrainingDefenseSpec(defense="adv-pgd").resolved("mnist")
    assert (
        spec.eps_ramp == 0.25
        and TrainingDefenseSpec(defense="adv-pgd").resolved("mnist", warm_start=True).eps_ramp == 0
    )
    objective = AdversarialObjective(spec)
    for done, share in ((0.05, 0.2), (0.125, 0.5), (0.25, 1.0), (0.9, 1.0)):
        objective.at(done)
        budget = objective.budget()
        assert budget.eps == pytest.approx(0.3 * share) and budget.step_size == pytest.approx(spec.step_size * share)
    flat = AdversarialObjective(replace(spec, eps_ramp=0.0))
    flat.at(0.01)
    assert flat.budget() is flat.spec
    assert "ramp 0.25" in spec.describe() and "eps_ramp" not in replace(spec, eps_ramp=0.0).to_dict()


@pytest.mark.slow
def test_training_tells_a_curriculum_the_share_done_after_each_step(tmp_path, monkeypatch):
    from advbridge.zoo.training import cross_entropy_objective, train

    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    seen = []

    class Recording:
        def at(self, done):
            seen.append(done)

        def __call__(self, model, x, y):
            return cross_entropy_objective(model, x, y)

    _, card = train(tiny_config(epochs=2, max_train=256, patience=5), progress=False, objective=Recording())
    assert seen == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert card["initial_loss"] > 0 and card["val_clean_accuracy"] == card["val_accuracy"]
