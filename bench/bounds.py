"""Benchmark: certified bounds against the physical limit, and what verification costs.

(a) interval_bounds time / (2 x one forward pass, same model and batch, no gradient): IBP pushes
    a centre and a radius through every layer, two passes of the model's cost, so 1.0 is the
    limit; target <= 1.5.
(b) Per-example time of verify with method "ibp", "crown" and "milp", as multiples of one
    forward pass per example. CROWN back-substitutes one row per unstable neuron of every
    hidden layer, so its cost grows with eps; MILP is exponential in the worst case, so it runs
    on a small MLP trained here in seconds (784-hidden-10 on embedded digits the evaluation
    digits exclude) and, with a time limit, on the zoo's MLP, printing how many finished.

(c) Certified training: one training step (forward, loss, backward, Adam step) with
    ``TrainConfig(method="ibp")`` and ``"crown_ibp"`` (at beta = 1, its costliest, i.e. during
    the ramp) divided by one standard step, same architecture, batch 100. IBP's loss adds two
    interval passes to the clean one, so about 3 is the limit of the method, not of the code.

The ratios in (a) and (c) are medians of per-repeat ratios, the order rotating every repeat;
(b) times one run. ``python bench/bounds.py`` runs the default CPU configuration; ``--help`` lists the
options.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from _common import paired_times, sync, where
from torch import nn

import robustlab as rl
from robustlab import bounds
from robustlab.models import Normalize


def _small_mlp(hidden: int, device: torch.device) -> nn.Module:
    """A 784-hidden-10 MLP trained for a few seconds on 1,000 embedded digits (every fifth, offset
    so that it never takes the evenly spaced evaluation digits of report.eval_set)."""
    torch.manual_seed(0)
    model = nn.Sequential(Normalize.for_dataset("mnist"), nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(),
                          nn.Linear(hidden, 10)).to(device)
    emb = rl.data.embedded_mnist()
    idx = torch.arange(2, 5000, 5)[:1000]
    x, y = emb.x[idx].to(device), emb.y[idx].to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _per_example(fn, n: int, device: torch.device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return (time.perf_counter() - start) / n, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="digits in (a)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--zoo-model", default="mnist-pgd-linf-0.3", help="small-cnn model of (a) and (b)")
    parser.add_argument("--verify-n", type=int, default=32, help="digits in (b)")
    parser.add_argument("--eps", type=float, default=0.1, help="Linf radius for the small CNN in (b)")
    parser.add_argument("--milp-eps", type=float, default=0.03, help="Linf radius for the small MLP in (b)")
    parser.add_argument("--zoo-milp-eps", type=float, default=0.02, help="Linf radius for the zoo's MLP in (b)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units of the small MLP in (b)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="MILP seconds per example in (b)")
    parser.add_argument("--skip-zoo-milp", action="store_true", help="skip MILP on the zoo's 784-512-512-10 MLP")
    parser.add_argument("--train-archs", default="small-cnn,wide-cnn", help="architectures of (c), comma-separated")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device} ({where(device)}), torch {torch.__version__}")

    # (a) IBP against two forward passes.
    model = rl.zoo.load(args.zoo_model, device=device)
    data = rl.report.eval_set(n=args.batch)
    x, y = data.x.to(device), data.y.to(device)

    def forwards():
        with torch.no_grad():
            model(x)
            model(x)

    t = paired_times({"2fwd": forwards, "ibp": lambda: bounds.interval_bounds(model, x, eps=args.eps)},
                     device, args.repeats)
    ratios = [a / b for a, b in zip(t["ibp"], t["2fwd"])]
    print(f"(a) interval_bounds / 2 x forward ({args.zoo_model}, batch {x.shape[0]}, {data.source}): "
          f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]  target <= 1.5")

    # (b) verification per example, in forward passes per example.
    data = rl.report.eval_set(n=args.verify_n)
    x, y = data.x.to(device), data.y.to(device)
    n = x.shape[0]
    fwd, _ = _per_example(forwards, 2 * n, device)
    for method in ("ibp", "crown"):
        sec, v = _per_example(lambda: bounds.verify(model, x, y, eps=args.eps, method=method), n, device)
        print(f"(b) verify {method:5s} {args.zoo_model}, Linf {args.eps}: {1e3 * sec:8.2f} ms per example "
              f"({sec / fwd:,.0f} forwards), certified {int(v.certified.sum())}/{n}")
    mlps = [(f"trained 784-{args.hidden}-10", _small_mlp(args.hidden, device), args.milp_eps)]
    if not args.skip_zoo_milp:
        mlps.append(("mnist-standard-mlp", rl.zoo.load("mnist-standard-mlp", device=device), args.zoo_milp_eps))
    for name, mlp, eps in mlps:
        fwd, _ = _per_example(lambda: mlp(x), n, device)
        for method in ("crown", "milp"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sec, v = _per_example(lambda: bounds.verify(mlp, x, y, eps=eps, method=method,
                                                            time_limit=args.time_limit), n, device)
            counts = ", ".join(f"{v.status.count(s)} {s}" for s in bounds.STATUSES)
            print(f"(b) verify {method:5s} {name}, Linf {eps}, time limit {args.time_limit:g} s: "
                  f"{1e3 * sec:8.2f} ms per example ({sec / fwd:,.0f} forwards); {counts}")

    for arch in args.train_archs.split(","):
        training_ratios(arch, device, args.repeats)


def training_ratios(arch: str, device: torch.device, repeats: int) -> None:
    """(c): one certified training step against one standard step on ``arch``."""
    from robustlab.train import TrainConfig, training_loss

    torch.manual_seed(0)
    model = rl.models.create(arch).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    emb = rl.data.embedded_mnist()
    x, y = emb.x[:100].to(device), emb.y[:100].to(device)
    configs = {m: TrainConfig(method=m, eps=0.4) for m in ("standard", "ibp", "crown_ibp")}

    def step(method: str):
        def run():
            # eps 0.2 of 0.4: mid-ramp, so crown_ibp computes its CROWN bound (beta = 0.5).
            loss, _ = training_loss(model, x, y, configs[method], eps=0.2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    t = paired_times({m: step(m) for m in configs}, device, repeats)
    for m in ("ibp", "crown_ibp"):
        ratios = [a / b for a, b in zip(t[m], t["standard"])]
        print(f"(c) {m} training step / standard step ({arch}, batch 100): {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}] (standard step {1e3 * statistics.median(t['standard']):.1f} ms)")


if __name__ == "__main__":
    main()
