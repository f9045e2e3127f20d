"""Benchmark: Integrated Gradients against the physical limit and against captum.

(a) robustlab IG (steps=50) time / (50 x one forward+backward w.r.t. the input on the same
    batch). The 50 gradient evaluations are the irreducible work: 1.0 is the limit; target <= 1.2.
(b) robustlab IG time / captum's ``IntegratedGradients.attribute`` (n_steps=50, the same
    points: method="riemann_trapezoid", all steps in one internal batch like ours), measured
    in the same run; target <= 1.0.

Each repeat times the three back to back in a rotating order; ratios are medians of the
per-repeat paired ratios, with their range, after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch
from _common import model_and_batch, paired_times, where

from robustlab import models, saliency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small-cnn", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=20, help="images explained at once")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, x, _ = model_and_batch(args.model, args.batch, device)
    target = model(x).argmax(1).detach()
    k = args.steps
    points = args.batch * k

    def forward_backward_k():
        # The same amount of work, in the same batch layout: k copies of the batch at once.
        z = x.repeat(k, 1, 1, 1).requires_grad_(True)
        out = model(z).gather(1, target.repeat(k)[:, None]).sum()
        torch.autograd.grad(out, z)

    def ours():
        saliency.integrated_gradients(model, x, target, steps=k, batch_size=points)

    fns = {"fb": forward_backward_k, "ours": ours}
    try:
        import captum
        from captum.attr import IntegratedGradients

        ig = IntegratedGradients(model)

        def theirs():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ig.attribute(x, target=target, n_steps=k, method="riemann_trapezoid", internal_batch_size=points)

        fns["captum"] = theirs
        captum_version = captum.__version__
    except ImportError:
        captum_version = "absent"

    times = paired_times(fns, device, args.repeats)
    print(f"device={device} ({where(device)}) torch={torch.__version__} captum={captum_version} model={args.model} "
          f"batch={args.batch} steps={k} repeats={args.repeats}")
    for name, ts in times.items():
        print(f"  {name:7} {statistics.median(ts) * 1e3:9.1f} ms")
    spread = lambda r: f"[{min(r):.2f}-{max(r):.2f}]"
    ra = [o / f for o, f in zip(times["ours"], times["fb"])]
    print(f"(a) IG / ({k} x forward+backward): {statistics.median(ra):.3f} (target <= 1.2) range {spread(ra)}")
    if "captum" in times:
        rb = [o / t for o, t in zip(times["ours"], times["captum"])]
        print(f"(b) robustlab IG / captum IG: {statistics.median(rb):.3f} (target <= 1.0) range {spread(rb)}")


if __name__ == "__main__":
    main()
