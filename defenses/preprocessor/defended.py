"""A classifier behind a preprocessor: an ``nn.Module`` like any other, so every library attacks it as is."""

from __future__ import annotations

from torch import Tensor, nn


class PreprocessedClassifier(nn.Module):
    """logits = classifier(preprocessor(x)).

    How an attacker's gradient passes the preprocessor is the preprocessor's choice (a
    :class:`~defenses.preprocessor.Squeezer`'s ``backward``: ``"exact"`` or ``"bpda"``). ``in_chans`` and
    ``num_classes`` of the classifier are passed on, so the runner's image checks still apply.

    Shape:
        the classifier's input; returns its logits.
    """

    def __init__(self, preprocessor: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.classifier = classifier
        for name in ("in_chans", "num_classes", "model_name"):
            if hasattr(classifier, name):
                setattr(self, name, getattr(classifier, name))

    @property
    def preprocess(self) -> nn.Module:
        """The preprocessor, under the name a defended system declares it by (``classifier(preprocess(x))``), so
        that an evaluation adds BPDA rows (:mod:`advbridge.experiments.defend.user`)."""
        return self.preprocessor

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.preprocessor(x))
