"""The evaluation core shared by ``compare``, ``defend`` and ``audit``: one margin loss and success rule
(:mod:`.losses`), one PGD with random restarts (:mod:`.restarts`), one library of per-sample reductions
(:mod:`.reductions`: worst case, smallest successful perturbation, robust accuracy at eps) and one indicator
protocol (:mod:`.indicators`)."""
