"""Benchmark: samples per second of robustlab's ``certify``, against the physical limit and ART.

(a) robustlab certify time / time of the forward passes alone (the same n0 + n noisy images,
    generated beforehand, in batches of the same size, under inference mode). The forward
    passes are the irreducible work, so 1.0 is the limit.
(b) ART's certify time / robustlab's (``PyTorchRandomizedSmoothing.certify``, the same
    algorithm: n0 selection samples, n estimation samples, Clopper–Pearson bound), same model,
    n0, n and batch size, measured in the same run; target >= 1.5 on CPU.

Each repeat certifies the same images with the three, in a rotating order; ratios are medians
of the per-repeat paired ratios, with their range, after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import paired_times, where

from robustlab import data, smoothing, zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist-gaussian-0.5", help="zoo model")
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--images", type=int, default=2, help="images certified per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-art", action="store_true", help="skip the ART comparison")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = zoo.load(args.model).to(device)
    emb = data.embedded_mnist()
    xs = emb.x[torch.arange(args.images) * 500].to(device)  # different digits
    total = args.n0 + args.n

    gen = torch.Generator(device=device).manual_seed(0)

    def ours():
        for x in xs:
            smoothing.certify(model, x, sigma=args.sigma, n0=args.n0, n=args.n, alpha=0.001,
                              batch_size=args.batch, generator=gen)

    # The limit: the same forward passes on noisy images that already exist.
    noisy = [(x + args.sigma * torch.randn(min(args.batch, total), *x.shape, device=device)) for x in xs]
    sizes = [args.batch] * (args.n0 // args.batch) + ([args.n0 % args.batch] if args.n0 % args.batch else []) \
        + [args.batch] * (args.n // args.batch) + ([args.n % args.batch] if args.n % args.batch else [])

    def forward_only():
        with torch.inference_mode():
            for z in noisy:
                for b in sizes:
                    model(z[:b]).argmax(1)

    fns = {"limit": forward_only, "ours": ours}
    art_version = "absent"
    if not args.no_art:
        try:
            import art
            from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
        except ImportError:
            art = None
        if art is not None:
            art_version = art.__version__
            art_model = PyTorchRandomizedSmoothing(
                model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(xs.shape[1:]), nb_classes=10,
                device_type="gpu" if device.type == "cuda" else "cpu", sample_size=args.n0,
                scale=args.sigma, alpha=0.001)
            x_np = xs.cpu().numpy()

            def theirs():
                art_model.certify(x_np, n=args.n, batch_size=args.batch)

            fns["art"] = theirs

    times = paired_times(fns, device, args.repeats)

    samples = args.images * total
    print(f"device={device} ({where(device)}) torch={torch.__version__} ART={art_version} model={args.model} "
          f"sigma={args.sigma} n0={args.n0} n={args.n} batch={args.batch} images={args.images} "
          f"repeats={args.repeats}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:6} {med * 1e3:9.1f} ms per repeat   {samples / med:12,.0f} samples/s")
    spread = lambda r: f"[{min(r):.2f}-{max(r):.2f}]"
    ratios_a = [o / f for o, f in zip(times["ours"], times["limit"])]
    print(f"(a) robustlab / forward passes alone: {statistics.median(ratios_a):.3f} "
          f"(limit 1.0) range {spread(ratios_a)}")
    if "art" in times:
        ratios_b = [t / o for o, t in zip(times["ours"], times["art"])]
        print(f"(b) ART / robustlab (speed-up): {statistics.median(ratios_b):.2f} (target >= 1.5) "
              f"range {spread(ratios_b)}")


if __name__ == "__main__":
    main()
