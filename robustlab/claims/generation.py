"""Claims about large-eps targeted attacks as generation (Tsipras et al. 2019, section 5)."""

from __future__ import annotations

import torch

from .. import interpret, report, zoo
from ._core import L2_ROBUST, ROBUST, STANDARD, Claim, make_claim

JUDGE = "mnist-gaussian-1.0"
"""The judge: the zoo's small CNN trained on digits with Gaussian noise of sigma 1.0. It is not
independent of the attacked models in every respect (same architecture, seed and training digits;
noise training makes it somewhat robust to L2 perturbations, so transfer from an L2-robust model
is not ruled out); the standard model's images are its transfer control. (The standard MLP,
mnist-standard-mlp, is fooled by transfer from the standard model on most digits.)"""


MADRY_JUDGE = "mnist-madry-pgd-linf-0.3"
"""A second judge of another kind: Madry et al.'s larger architecture (two convolutions and a
1,024-unit dense layer), adversarially trained at Linf 0.3, with its own initialisation. Robust
models are hard to fool by transfer, which is what a judge must be; it shares the training
digits and the zoo's recipe style with the attacked models."""


def _generation_claim(name: str, model_name: str, label: str, *, n: int, eps: float, steps: int, restarts: int,
                      root, seed: int, judge_name: str = JUDGE) -> Claim:
    test = report.eval_set(root=root, n=n)
    target = (test.y + 1) % 10
    judge = zoo.load(judge_name)
    runs, detail = {}, {}
    for m in (model_name, STANDARD):
        res = interpret.targeted_generation(zoo.load(m), judge, test.x, target, eps=eps, steps=steps,
                                            restarts=restarts, generator=torch.Generator().manual_seed(seed))
        first = interpret.targeted_generation(zoo.load(m), judge, test.x, target, eps=eps, steps=steps)
        runs[m] = res
        detail[m] = {"reached_target": res.source_success, "judge_agrees": res.judge_agreement,
                     "reached_target_from_x_alone": first.source_success,
                     "judge_agrees_from_x_alone": first.judge_agreement}
    return make_claim(
        name,
        f"Large-eps targeted attacks on the {label} model produce images that a separately trained judge sees as the "
        "target class, more often than the same attacks on the standard model (whose images fool the judge only "
        "by transfer).",
        runs[model_name].judged.double() - runs[STANDARD].judged.double(),
        {"data": test.source, "target": "(y + 1) mod 10", "judge": judge_name,
         "attack": f"APGD-CE towards the target, L2 eps {eps}, {steps} steps, {restarts} restarts (the first "
                   f"from x, the others from random points of the ball), best point kept",
         "control": f"the judge's agreement on the standard model's images ({STANDARD})",
         "models": detail})


def claim_l2_robust_generation_looks_like_target(*, n: int = 200, eps: float = 6.0, steps: int = 100,
                                                 restarts: int = 4, root=None, seed: int = 0) -> Claim:
    """The judge's agreement with the target on the L2-2.0 model's generations minus on the
    standard model's, paired per digit."""
    return _generation_claim("l2_robust_generation_looks_like_target", L2_ROBUST, "L2-2.0 adversarially trained",
                             n=n, eps=eps, steps=steps, restarts=restarts, root=root, seed=seed)


def claim_linf_robust_generation_looks_like_target(*, n: int = 200, eps: float = 6.0, steps: int = 100,
                                                   restarts: int = 4, root=None, seed: int = 0) -> Claim:
    """The same for the Linf-0.3 model. Its gradient at the clean digit is masked (the attack from
    x alone reaches the target on few digits: see the detail); random restarts get past that."""
    return _generation_claim("linf_robust_generation_looks_like_target", ROBUST, "Linf-0.3 adversarially trained",
                             n=n, eps=eps, steps=steps, restarts=restarts, root=root, seed=seed)


def claim_l2_robust_generation_judged_by_madry_model(*, n: int = 200, eps: float = 6.0, steps: int = 100,
                                                     restarts: int = 4, root=None, seed: int = 0) -> Claim:
    """The L2-2.0 model's generations against the standard model's, judged by the Linf-trained
    model of Madry et al.'s architecture instead of the noise-trained small CNN."""
    return _generation_claim("l2_robust_generation_judged_by_madry_model", L2_ROBUST, "L2-2.0 adversarially trained",
                             n=n, eps=eps, steps=steps, restarts=restarts, root=root, seed=seed,
                             judge_name=MADRY_JUDGE)
