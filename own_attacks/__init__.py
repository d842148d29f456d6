"""In-house attacks: pure, batched PyTorch functions on images in [0, 1].

Contract (adv-lib's): ``attack(model, inputs, labels, *, ...) -> Tensor`` where ``model`` maps images in
[0, 1] to logits and the result has the shape, dtype and device of ``inputs``.
"""

from own_attacks.ddn import ddn
from own_attacks.deepfool import deepfool
from own_attacks.fgsm import fgsm
from own_attacks.pgd import pgd

__all__ = ["ddn", "deepfool", "fgsm", "pgd"]
