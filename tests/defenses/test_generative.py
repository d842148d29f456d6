"""Generative defenses (issue 11, first part): the models on any image shape, their cache, and the purifier
and labeller not being no-ops — gradients flow end to end, refinement lowers the error, the true class's
reconstruction is the closer one on most clean digits."""

from __future__ import annotations

import pytest
import torch

from advbridge.bridge.errors import AdvBridgeError, InvalidParameterError, UnknownNameError
from advbridge.defenses.generative import (
    ConvGenerator,
    GeneratorConfig,
    Purifier,
    ReconstructionDetector,
    ReconstructionLabeller,
    check_generator_for,
    get_or_train_generator,
)
from advbridge.defenses.preprocessor import PreprocessedClassifier


@pytest.mark.parametrize(("kind", "chans", "side"), [("ae", 1, 28), ("vae", 3, 32), ("cvae", 3, 30), ("vae", 1, 5)])
def test_generators_reconstruct_any_shape_in_0_1(kind, chans, side):
    torch.manual_seed(0)
    g = ConvGenerator(kind, chans, side, latent_dim=4, num_classes=10)
    x = torch.rand(3, chans, side, side)
    y = torch.tensor([0, 1, 2]) if kind == "cvae" else None
    out = g(x, y)
    assert out.shape == x.shape and out.min() > 0 and out.max() < 1
    loss, terms = g.loss(x, y)
    assert loss.requires_grad and terms["reconstruction"] > 0 and (kind == "ae") == ("kl" not in terms)


@pytest.mark.parametrize(
    ("make", "message", "error"),
    [
        (
            lambda: ConvGenerator("gan", 1, 28),
            "expected a generator in ae, vae, cvae, got 'gan'",
            InvalidParameterError,
        ),
        (lambda: ConvGenerator("vae", 1, 28, latent_dim=0), "expected latent_dim >= 1", InvalidParameterError),
        (lambda: GeneratorConfig(dataset="mnist", generator="vea"), "did you mean 'vae'", UnknownNameError),
        (
            lambda: GeneratorConfig(dataset="mnist", beta=-1),
            "expected beta as a finite number >= 0, got -1",
            InvalidParameterError,
        ),
        (lambda: GeneratorConfig(dataset="mnist", latent_dim=0), "expected latent_dim >= 1", InvalidParameterError),
        (
            lambda: check_generator_for({"dataset": "mnist", "in_chans": 1, "image_size": 28}, "cifar10", 3, 32),
            "expected a generator for cifar10 (3×32×32), got one trained on 'mnist' (1×28×28)",
            InvalidParameterError,
        ),
    ],
)
def test_bad_generator_input_is_one_line(make, message, error):
    with pytest.raises(error) as info:
        make()
    assert isinstance(info.value, AdvBridgeError) and message in str(info.value) and "\n" not in str(info.value)


def test_purifier_changes_the_input_and_passes_gradients_end_to_end(mnist_model, mnist_batch):
    torch.manual_seed(0)
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    purifier = Purifier(ConvGenerator("vae", 1, 28, latent_dim=8)).eval()
    defended = PreprocessedClassifier(purifier, mnist_model)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(defended(xg), y), xg)
    with torch.no_grad():
        assert float((purifier(x) - x).abs().mean()) > 0.01
    assert bool((grad.flatten(1).abs().amax(1) > 0).all())
    assert not purifier.random and Purifier(purifier.generator, sample=True).random
    with pytest.raises(InvalidParameterError, match="got a cvae"):
        Purifier(ConvGenerator("cvae", 1, 28, num_classes=10))


def test_labeller_is_batched_and_its_refinement_lowers_the_error_with_gradients_either_way(mnist_batch):
    torch.manual_seed(0)
    x = mnist_batch[0][:6]
    g = ConvGenerator("cvae", 1, 28, latent_dim=8, num_classes=10).eval()
    plain, refined = ReconstructionLabeller(g), ReconstructionLabeller(g, refine_steps=5)
    with torch.no_grad():
        e0, e5 = plain.errors(x), refined.errors(x)
    assert e0.shape == (6, 10) and bool((e5 < e0).float().mean() > 0.9)
    for labeller in (refined, ReconstructionLabeller(g, refine_steps=5, detach_refinement=True)):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(labeller(xg)[:, 0].sum(), xg)
        assert bool((grad.flatten(1).abs().amax(1) > 0).all())
    decoded, encoded = [], []
    hooks = [
        g.decoder.register_forward_hook(lambda m, a, o: decoded.append(len(o))),
        g.encoder.register_forward_hook(lambda m, a, o: encoded.append(len(o))),
    ]
    with torch.no_grad():
        refined(x)
    for hook in hooks:
        hook.remove()
    assert decoded == [60] * 6, "one decode of all N·K codes per refinement step, and one at the end"
    assert encoded == [6], "the encoder's convolutions once per sample: the class joins after them"
    # ... and the codes are those of encoding each (sample, class) pair
    mu, logvar = g.encode_every_class(x)
    mu_pairs, logvar_pairs = g.encode(x.repeat_interleave(10, 0), torch.arange(10).repeat(6))
    torch.testing.assert_close(mu, mu_pairs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logvar, logvar_pairs, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_trained_models_are_cached_and_the_true_class_reconstructs_best(tmp_path, monkeypatch):
    from advbridge.zoo.datasets import load_tensors

    monkeypatch.setenv("ADVBRIDGE_CACHE", str(tmp_path))
    cfg = GeneratorConfig(dataset="mnist-5k", generator="cvae", latent_dim=8, epochs=3, max_train=2000)
    g, card = get_or_train_generator(cfg, progress=False)
    assert card["kind"] == "generator" and len(card["history"]) == card["epochs_run"]
    again, _ = get_or_train_generator(cfg, progress=False)  # from the cache
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), again.state_dict().values()))
    x, y = load_tensors("mnist-5k", "test", n=100, seed=0)
    with torch.no_grad():
        errors = ReconstructionLabeller(g).errors(x)
    true = errors.gather(1, y[:, None]).squeeze(1)
    other = errors.gather(1, ((y + 1 + torch.arange(100) % 9) % 10)[:, None]).squeeze(1)
    assert float((true < other).double().mean()) > 0.8
    detector = ReconstructionDetector(
        get_or_train_generator(
            GeneratorConfig(dataset="mnist-5k", generator="ae", epochs=2, max_train=2000), progress=False
        )[0]
    )
    noise = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert float((detector.scores(noise) > detector.scores(x)).double().mean()) > 0.9


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--generator", "gan"], "unknown generator 'gan'"),
        (["--generator", "vae", "--latent-dim", "0"], "expected --latent-dim as an int >= 1, got 0"),
        (["--generator", "cvae", "--beta", "-1"], "expected --beta as a finite number >= 0, got -1.0"),
    ],
)
def test_cli_train_bad_generator_exits_2(extra, message, capsys):
    from advbridge.cli import main

    assert main(["train", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
