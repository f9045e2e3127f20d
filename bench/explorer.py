"""Benchmark: how fast the explorer answers a slider move (robustlab.widgets).

For each attack x saliency method, on the standard and the PGD-trained zoo models (the
explorer's defaults), first digits of the offline evaluation set:

- compute: a slider move to an epsilon not yet seen (attack on both models, two maps each,
  predictions, redraw). Target <= 1 s.
- cached: a move back to an epsilon already seen (redraw only). Target <= 0.25 s.

Ratios printed: (a) each time against its budget (1 s, 0.25 s); (b) cached against the floor of
a redraw, FrameRenderer.render alone (matplotlib drawing the PNG); (c) the attack part of
"compute" (robustlab PGD, 20 steps, on both models) against torchattacks' PGD with the same
settings, measured in the same run (a plain, established implementation of the same work).
Medians over the moves of the epsilon grid.
"""

from __future__ import annotations

import argparse
import statistics
import time

from robustlab import attacks, widgets


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3, help="digits to move the slider on")
    args = parser.parse_args()
    app = widgets.explorer(n_images=args.images)
    grid = widgets.EPS_GRID["linf"][1:]
    print(f"{'attack':<6} {'method':<22} {'compute s':>9} {'(a) /1 s':>8} {'cached s':>8} {'(a) /0.25 s':>11} "
          f"{'(b) /render':>11}")
    for attack in widgets.ATTACKS:
        for method in widgets.METHODS:
            app.attack.value, app.method.value = attack, method
            compute, cached = [], []
            for image in range(args.images):
                app.image.value = image
                for eps in grid:
                    if not app.data.cached(image, "linf", attack, eps, method):
                        app._stop.set()  # no background work: every first move computes
                        app.eps.value = eps
                        compute.append(app.last_update_s)
                for eps in grid[::-1]:
                    app.eps.value = eps
                    if app.last_update_cached:
                        cached.append(app.last_update_s)
            frame = app.data.frame(0, "linf", attack, grid[-1], method)
            render = median_time(lambda: app._renderer().render(frame), 5)
            c, k = statistics.median(compute), statistics.median(cached)
            print(f"{attack:<6} {method:<22} {c:>9.3f} {c / 1.0:>8.2f} {k:>8.3f} {k / 0.25:>11.2f} {k / render:>11.2f}")
    try:
        import torchattacks
    except ImportError:
        print("(c) skipped: torchattacks is not installed")
        return
    x, y = app.data.x[:1], app.data.y[:1]
    models = list(app.all_models.values())
    eps = 0.3

    def ours():
        for m in models:
            attacks.pgd(m, x, y, eps=eps, alpha=2.5 * eps / widgets.PGD_STEPS, steps=widgets.PGD_STEPS,
                        random_start=False)

    peers = [torchattacks.PGD(m, eps=eps, alpha=2.5 * eps / widgets.PGD_STEPS, steps=widgets.PGD_STEPS,
                              random_start=False) for m in models]

    def theirs():
        for p in peers:
            p(x, y)

    ours(), theirs()
    pairs = [median_time(ours, 1) / median_time(theirs, 1) for _ in range(15)]
    print(f"(c) attack part, robustlab PGD / torchattacks PGD (20 steps, both models, one image): "
          f"{statistics.median(pairs):.2f} [{min(pairs):.2f}-{max(pairs):.2f}]")
    app.close()


if __name__ == "__main__":
    main()
