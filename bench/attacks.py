"""Benchmark: how close robustlab's PGD is to the physical limit, and to torchattacks.

(a) PGD-k time / (k x one forward+backward w.r.t. the input, same model and batch).
    k gradient evaluations are the irreducible work, so 1.0 is the limit; target <= 1.10.
(b) robustlab PGD time / torchattacks PGD time, same settings, measured in the same run,
    interleaved; target <= 1.0.

Each repeat times the three back to back, in a rotating order; the printed ratios are medians of the
per-repeat ratios, with their range, after a warm-up. Run ``python bench/attacks.py
--help`` for the options; ``make bench`` runs the default CPU configuration.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _common import model_and_batch, paired_times, where

import robustlab as rl
from robustlab import models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small-cnn", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--norms", default="linf,l2")
    args = parser.parse_args()

    device = torch.device(args.device)
    model, x, y = model_and_batch(args.model, args.batch, device)

    try:
        import torchattacks
    except ImportError:
        torchattacks = None

    k = args.steps

    def forward_backward_k():
        for _ in range(k):
            x_in = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x_in), y, reduction="sum")
            torch.autograd.grad(loss, x_in)

    print(f"device={device} ({where(device)}) "
          f"torch={torch.__version__} model={args.model} batch={args.batch} k={k} repeats={args.repeats}")
    print(f"{'norm':5} {'k x fwd+bwd':>12} {'robustlab':>10} {'torchattacks':>13} "
          f"{'(a) ratio':>10} {'target':>7} {'(b) ratio':>10} {'target':>7}")
    for norm in args.norms.split(","):
        eps, alpha = (0.3, 0.01) if norm == "linf" else (2.0, 0.25)
        gen = torch.Generator(device=device).manual_seed(0)
        ours = lambda: rl.pgd(model, x, y, eps=eps, alpha=alpha, steps=k, norm=norm, generator=gen)
        theirs = None
        if torchattacks is not None:
            cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
            theirs_attack = cls(model, eps=eps, alpha=alpha, steps=k, random_start=True)
            theirs = lambda: theirs_attack(x, y)
        fns = {"fb": forward_backward_k, "ours": ours}
        if theirs is not None:
            fns["theirs"] = theirs
        times = paired_times(fns, device, args.repeats)  # warm-up, then rotated, interleaved repeats
        # Ratios are paired within a repeat, then the median is taken: on a shared machine this
        # is far steadier than a ratio of separate medians.
        ratios_a = [o / f for o, f in zip(times["ours"], times["fb"])]
        ratios_b = [o / t for o, t in zip(times["ours"], times.get("theirs", []))]
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ratio_a = statistics.median(ratios_a)
        ratio_b = statistics.median(ratios_b) if ratios_b else float("nan")
        spread = lambda r: f"[{min(r):.2f}-{max(r):.2f}]" if r else ""
        theirs_s = f"{med['theirs'] * 1e3:10.1f} ms" if theirs is not None else "   (absent)"
        print(f"{norm:5} {med['fb'] * 1e3:9.1f} ms {med['ours'] * 1e3:7.1f} ms {theirs_s} "
              f"{ratio_a:10.3f} {'<=1.10':>7} {ratio_b:10.3f} {'<=1.00':>7}   "
              f"range (a) {spread(ratios_a)} (b) {spread(ratios_b)}")

if __name__ == "__main__":
    main()
