"""In-house attacks: pure, batched PyTorch functions on inputs in [0, 1].

Contract (adv-lib's): ``attack(model, inputs, labels, *, ...) -> Tensor`` where ``model`` maps inputs in
[0, 1] to logits and the result has the shape, dtype, device and memory layout of ``inputs``. Inputs are
any floating batch ``(N, ...)``: images ``(N, C, H, W)``, feature vectors ``(N, D)``, signals
``(N, C, L)``, volumes; channels-last applies to 4-D batches only.
"""

if (
    __name__ != "advbridge.own_attacks"
):  # the folder is advbridge/own_attacks (a link): a bare ``import own_attacks`` would load a second copy
    raise ImportError(f"import advbridge.own_attacks, not {__name__}: the card's folders are subpackages of advbridge")


from advbridge.own_attacks.ddn import ddn
from advbridge.own_attacks.deepfool import deepfool
from advbridge.own_attacks.fgsm import fgsm
from advbridge.own_attacks.pgd import pgd

__all__ = ["ddn", "deepfool", "fgsm", "pgd"]
