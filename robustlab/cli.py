"""Command line: ``robustlab train | evaluate | certify | zoo list | zoo build`` (also ``python -m robustlab``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch

DESCRIPTION = """\
robustlab: adversarial robustness and interpretability, from the command line.

  robustlab zoo list                       the shipped models and their headline numbers
  robustlab evaluate mnist-pgd-linf-0.3    robustness report of a zoo model (or a .safetensors file)
  robustlab certify mnist-gaussian-0.5 --sigma 0.5 -N 100   randomized-smoothing certificates
  robustlab verify mnist-ibp-linf-0.3 --eps 0.3            verified accuracy (IBP, CROWN, exact MILP)
  robustlab train --method pgd --eps 0.3 --out my-model.safetensors
  robustlab zoo build mnist-standard       retrain a zoo model from scratch

Data come from --data-root, else $ROBUSTLAB_DATA, else a user cache folder; offline, the MNIST
test split falls back to 5,000 embedded digits (the report says which it used).
"""


def _add_train(sub):
    from .train import METHODS, OPTIMIZERS, SCHEDULES, TrainConfig

    p = sub.add_parser("train", help="train a model on MNIST (train split minus the embedded 5,000)",
                       description="Train a model with one of robustlab's methods and save it as "
                                   "safetensors with a JSON card beside it.")
    defaults = TrainConfig()
    p.add_argument("--arch", default="small-cnn", help="architecture (default: small-cnn)")
    p.add_argument("--method", default="standard", choices=METHODS, help="training method")
    p.add_argument("--out", required=True, type=Path, help="where to write the .safetensors file")
    p.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="per-epoch checkpoint; an existing one is resumed")
    p.add_argument("--limit", type=int, default=None, help="train on the first N examples only")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "method":
            continue
        default = getattr(defaults, field.name)
        kind = type(default) if default is not None else float
        extra = {"choices": {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "norm": ("linf", "l2")}[field.name]} \
            if field.name in ("optimizer", "schedule", "norm") else {}
        p.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default,
                       help=f"(default: {default})", **extra)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from safetensors.torch import save_file

    from . import data, models
    from .train import TrainConfig, fit

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**fields)
    config.validate()
    x, y = data.load("mnist", "train", root=args.data_root, download=False, exclude_embedded=True)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    torch.manual_seed(config.seed)
    model = models.create(args.arch)
    result = fit(model, (x, y), config, checkpoint=args.checkpoint)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:  # under torchrun every process holds the same weights: one writes them
            return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    card = {"architecture": args.arch, "config": config.to_dict(), "history": result.history,
            "stopped": result.stopped, "examples": int(x.shape[0])}
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"saved {args.out} (+ .json); last epoch: {result.history[-1]}")
    if result.stopped:
        print(f"note: {result.stopped}")
    return 0


def _load_model(spec: str):
    from . import models, zoo

    path = Path(spec)
    if path.suffix == ".safetensors":
        if not path.exists():
            raise SystemExit(f"error: no model file {path}")
        from safetensors.torch import load_file

        card_path = path.with_suffix(".json")
        arch = json.loads(card_path.read_text())["architecture"] if card_path.exists() else "small-cnn"
        model = models.create(arch)
        model.load_state_dict(load_file(str(path)))
        return path.stem, model.eval()
    return spec, zoo.load(spec)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="robustness report: the attack suite (APGD-CE, APGD-T, Square)",
                       description="Evaluate models under Linf 0.1/0.2/0.3 and L2 1.0/2.0 with the attack "
                                   "suite (AutoAttack's protocol: APGD-CE, then APGD-T, then Square, each "
                                   "on the examples still robust, with masking checks). --attacks cascade "
                                   "runs the older, weaker cascade FGSM/FGM -> PGD-40 -> PGD-100 x restarts "
                                   "(plus FGM at L2 eps 5) for comparison. Runs sharded under torchrun.")
    p.add_argument("models", nargs="+", help="zoo names (see `robustlab zoo list`) or .safetensors files")
    p.add_argument("--attacks", choices=("suite", "cascade"), default="suite",
                   help="the attack suite (default) or the old PGD cascade")
    p.add_argument("--version", choices=("standard", "quick"), default="standard",
                   help="suite version (default: standard, AutoAttack's settings)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks (default: 0)")
    p.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    p.add_argument("-n", "--n", type=int, default=None, help="evaluate on the first N test examples")
    p.add_argument("--restarts", type=int, default=5, help="cascade: restarts of the final PGD (default: 5)")
    p.add_argument("--final-steps", type=int, default=100, help="cascade: steps of the final PGD (default: 100)")
    p.add_argument("--threat-models", default=None,
                   help="comma-separated, e.g. 'linf:0.3,l2:2.0' (default: Linf 0.1/0.2/0.3, L2 1.0/2.0; "
                        "the cascade adds FGM at L2 5, e.g. 'l2:5:single')")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--results-dir", type=Path, default=None,
                   help="suite: write one JSON per model and threat model here; finished ones are "
                        "reused and a killed run resumes")
    p.add_argument("--csv", type=Path, default=None, help="cascade: also write the table as CSV")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")
    p.add_argument("--update-cards", action="store_true",
                   help="store the measured numbers in the zoo models' cards")
    p.set_defaults(func=_cmd_evaluate)


def _init_distributed() -> None:
    """Joins the torchrun process group (gloo on the CPU, nccl on GPUs) when WORLD_SIZE > 1."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def _cmd_evaluate(args) -> int:
    from . import report, zoo
    from .data import embedded_mnist
    from .train import evaluate_accuracy

    if args.attacks == "cascade":
        return _cmd_evaluate_cascade(args)
    _init_distributed()
    rank, _ = report._distributed()
    threats = report.SUITE_THREAT_MODELS
    if args.threat_models:
        threats = [report.parse_threat_model(t) for t in args.threat_models.split(",")]
        if any(t.single_step_only for t in threats):
            raise SystemExit("error: ':single' threat models belong to --attacks cascade")
    test = report.eval_set(root=args.data_root, n=args.n)
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    x, y = test.x.to(device), test.y.to(device)
    if rank == 0:
        print(f"data: {test.source}")
    md_parts = []
    for spec in args.models:
        name, model = _load_model(spec)
        model = model.to(device)
        records = [report.suite_entry(model, x, y, norm=t.norm, eps=t.eps, version=args.version, seed=args.seed,
                                      batch_size=args.batch_size, progress=True, source=test.source,
                                      model_name=name, results_dir=args.results_dir) for t in threats]
        md = report.suite_to_markdown(records, name)
        md_parts.append(md)
        if rank != 0:
            continue
        print(md)
        if args.update_cards:
            if name not in zoo.names():
                raise SystemExit(f"error: --update-cards needs zoo models, {spec!r} is not one")
            rows = [{k: r[k] for k in ("norm", "eps", "clean", "robust", "n", "broken_by", "masking_warnings")}
                    for r in records]
            key = "suite" if args.n is None or args.n == 1000 else f"suite_n{test.x.shape[0]}"
            emb = embedded_mnist()
            zoo.update_metrics(name, {
                key: {"data": test.source, "protocol": records[0]["protocol"], "seed": args.seed,
                      "torch": torch.__version__, "rows": rows},
                "embedded_clean_accuracy": evaluate_accuracy(model, emb.x, emb.y),
            })
    if args.markdown and rank == 0:
        args.markdown.write_text("\n".join(md_parts))
    return 0


def _cmd_evaluate_cascade(args) -> int:
    from . import report, zoo
    from .data import embedded_mnist
    from .train import evaluate_accuracy

    threats = report.DEFAULT_THREAT_MODELS
    if args.threat_models:
        threats = [report.parse_threat_model(t) for t in args.threat_models.split(",")]
    test = report.eval_set(root=args.data_root, n=args.n)
    print(f"data: {test.source}")
    csv_parts, md_parts = [], []
    for spec in args.models:
        name, model = _load_model(spec)
        rows = report.robustness_report(model, test.x, test.y, threat_models=threats,
                                        restarts=args.restarts, final_steps=args.final_steps,
                                        batch_size=args.batch_size, progress=True)
        md = report.to_markdown(rows, name, test.source)
        print(md)
        csv_parts.append(report.to_csv(rows, name))
        md_parts.append(md)
        if args.update_cards:
            if name not in zoo.names():
                raise SystemExit(f"error: --update-cards needs zoo models, {spec!r} is not one")
            emb = embedded_mnist()
            key = "report" if threats == report.DEFAULT_THREAT_MODELS and args.final_steps == 100 else \
                f"report_pgd{args.final_steps}x{args.restarts}"
            zoo.update_metrics(name, {
                key: {"data": test.source, "rows": [r._asdict() for r in rows]},
                "embedded_clean_accuracy": evaluate_accuracy(model, emb.x, emb.y),
            })
    if args.csv:
        args.csv.write_text(csv_parts[0] + "".join(p.split("\n", 1)[1] for p in csv_parts[1:]))
    if args.markdown:
        args.markdown.write_text("\n".join(md_parts))
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.25,0.5, got {text!r}")


def _add_certify(sub):
    p = sub.add_parser(
        "certify", help="randomized smoothing: certified L2 radii of test images (Cohen et al.)",
        description="Certify the Gaussian-smoothed version of each model on the first N test images "
                    "(Cohen et al. 2019, CERTIFY): the class is chosen from n0 noisy samples and "
                    "certified with a Clopper-Pearson bound from n more. Prints, per model and sigma, "
                    "how many images are certified correctly, the certified accuracy at several "
                    "radii and the average certified radius (ACR: radius if correct, else 0).")
    p.add_argument("models", nargs="+", help="zoo names (see `robustlab zoo list`) or .safetensors files")
    p.add_argument("--sigma", type=_floats, required=True, help="noise level(s), e.g. 0.25 or 0.25,0.5,1.0")
    p.add_argument("--n0", type=int, default=100, help="selection samples (default: 100)")
    p.add_argument("--n", "--samples", dest="samples", type=int, default=100_000,
                   help="estimation samples per image (default: 100,000 as in the paper); under torchrun "
                        "write --samples, since torchrun's own parser takes --n as an abbreviation")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    p.add_argument("-N", "--images", type=int, default=None,
                   help="certify the first N test images (default: all; note --n is the sample count)")
    p.add_argument("--radii", type=_floats, default=[0.0, 0.5, 1.0, 1.5, 2.0, 2.5],
                   help="radii for the certified-accuracy columns (default: 0,0.5,1,1.5,2,2.5)")
    p.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="write the per-image table of each run as <model>-sigma<s>.csv here, with a hidden "
                        "checkpoint per run and process (.<model>-sigma<s>.rankR-of-W.ckpt) saved after every "
                        "image and kept: the same command again resumes a killed run and reuses finished "
                        "ones; delete the checkpoints to recompute (one from other settings, weights or "
                        "images is refused with an error)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the summary as Markdown")
    p.add_argument("--plot", type=Path, default=None,
                   help="also draw certified accuracy against radius for every run (.png, .svg, .pdf)")
    p.set_defaults(func=_cmd_certify)


def _cmd_certify(args) -> int:
    from . import report, smoothing

    test = report.eval_set(root=args.data_root, n=args.images)
    _init_distributed()
    rank, world = report._distributed()
    device = torch.device(args.device)
    if device.type == "cuda" and world > 1:  # one GPU per process under torchrun
        device = torch.device("cuda", rank % torch.cuda.device_count())
    x, y = test.x.to(device), test.y.to(device)
    # Under torchrun each process certifies a contiguous slice of the images, with its own noise
    # stream (seed + 1,000,003 * rank): every certificate holds at level alpha all the same.
    lo, hi = rank * x.shape[0] // world, (rank + 1) * x.shape[0] // world
    header = ["model", "sigma", "certified correct", "abstain"] + [f"r>={r:g}" for r in args.radii] \
        + ["ACR", "seconds"]
    lines = [f"Randomized smoothing on {test.source}: n0={args.n0}, n={args.samples:,}, "
             f"alpha={args.alpha:g}, seed {args.seed}, {device}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if rank == 0:
        print(lines[0] + (f", {world} processes" if world > 1 else ""))
    runs = {}
    for spec in args.models:
        name, model = _load_model(spec)
        model = model.to(device)
        for sigma in args.sigma:
            generator = torch.Generator(device=device).manual_seed(args.seed + 1_000_003 * rank)
            stem, ckpt = f"{name}-sigma{sigma:g}", None
            if args.results_dir:
                # One checkpoint per process, named like report.suite_entry's; kept when the run
                # completes, so that the same command again (make smoothing-results after a kill)
                # resumes the unfinished run and reads the finished ones back.
                args.results_dir.mkdir(parents=True, exist_ok=True)
                ckpt = _certify_checkpoint(args.results_dir, stem, rank, world)
            res = smoothing.certify_dataset(model, x[lo:hi], y[lo:hi], sigma=sigma, n0=args.n0, n=args.samples,
                                            alpha=args.alpha, batch_size=args.batch_size,
                                            generator=generator, checkpoint=ckpt)
            if world > 1:
                res = _gather_certificates(res, lo)
                if rank != 0:
                    continue
            acc = smoothing.certified_accuracy(res, args.radii)
            row = [name, f"{sigma:g}", f"{int(res.correct.sum())} / {len(res)}",
                   str(int((res.prediction == smoothing.ABSTAIN).sum()))] \
                + [f"{100 * float(a):.1f} %" for a in acc] \
                + [f"{smoothing.average_certified_radius(res):.3f}", f"{float(res.time.sum()):.0f}"]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1])
            runs[f"{name}, sigma={sigma:g}"] = res
            if args.results_dir:
                res.to_csv(args.results_dir / f"{stem}.csv")
    if rank != 0:
        return 0
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        ax = smoothing.plot_certified_accuracy(runs)
        ax.set_title(f"{test.source}; n={args.samples:,}, alpha={args.alpha:g}", fontsize=9)
        ax.figure.savefig(args.plot, dpi=150, bbox_inches="tight")
    return 0


def _certify_checkpoint(results_dir: Path, stem: str, rank: int, world: int) -> Path:
    """The hidden per-process checkpoint of one certify run inside ``--results-dir``."""
    return results_dir / f".{stem}.rank{rank}-of-{world}.ckpt"


def _add_verify(sub):
    p = sub.add_parser("verify", help="verified accuracy under Linf: interval bounds, CROWN or exact MILP",
                       description="Certify that every point of the Linf eps-ball (within [0, 1]) around each test "
                                   "digit is classified correctly; prints verified accuracy with a 95 % interval.")
    p.add_argument("models", nargs="+", help="zoo names or .safetensors files")
    p.add_argument("--eps", default="0.1,0.3", help="comma-separated Linf radii (default: 0.1,0.3)")
    p.add_argument("--methods", default="ibp,crown", help="comma-separated: ibp, crown, milp (default: ibp,crown)")
    p.add_argument("-n", type=int, default=None, help="the first N test digits (default: all)")
    p.add_argument("--batch-size", type=int, default=500, help="digits per bound computation")
    p.add_argument("--time-limit", type=float, default=10.0, help="MILP seconds per digit")
    p.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    p.add_argument("--update-cards", action="store_true",
                   help="store the results in the zoo cards as metrics['verified']")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from . import report, stats, zoo
    from .bounds import METHODS, verify

    try:
        radii = [float(e) for e in args.eps.split(",")]
    except ValueError:
        raise SystemExit(f"error: --eps must be comma-separated numbers such as 0.1,0.3, got {args.eps!r}")
    methods = [m.strip().lower() for m in args.methods.split(",")]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"error: unknown method {bad[0]!r} in --methods; valid: {', '.join(METHODS)}")
    test = report.eval_set(root=args.data_root, n=args.n)
    print(f"data: {test.source}")
    for spec in args.models:
        name, model = _load_model(spec)
        rows = []
        for eps in radii:
            for method in methods:
                t0 = time.perf_counter()
                certified = torch.cat([verify(model, test.x[i:i + args.batch_size], test.y[i:i + args.batch_size],
                                              eps=eps, method=method, time_limit=args.time_limit).certified
                                       for i in range(0, test.x.shape[0], args.batch_size)])
                k, n = int(certified.sum()), certified.numel()
                low, high = stats.proportion_interval(k, n)
                rows.append({"method": method, "eps": eps, "verified": k / n, "count": k, "n": n,
                             "interval95": [low, high], "seconds": round(time.perf_counter() - t0, 1)})
                print(f"{name} Linf {eps:g} {method:5}: verified {100 * k / n:.1f} % ({k}/{n}; 95 % interval "
                      f"{100 * low:.1f}-{100 * high:.1f} %) in {rows[-1]['seconds']:.0f} s")
        if args.update_cards:
            if name not in zoo.names():
                raise SystemExit(f"error: --update-cards needs zoo models, {spec!r} is not one")
            key = "verified" if args.n is None else f"verified_n{test.x.shape[0]}"
            zoo.update_metrics(name, {key: {"data": test.source, "norm": "linf", "torch": torch.__version__,
                                            "rows": rows}})
    return 0


def _gather_certificates(res, offset: int):
    """Every process's slice of certificates, in image order (the index made global)."""
    import dataclasses

    import torch.distributed as dist

    from .smoothing import CertificationResults

    fields = ("index", "label", "prediction", "radius", "correct", "time")
    mine = {f: getattr(res, f).cpu() for f in fields}
    mine["index"] = mine["index"] + offset
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    merged = {f: torch.cat([p[f] for p in parts]) for f in fields}
    settings = {f.name: getattr(res, f.name) for f in dataclasses.fields(res) if f.init and f.name not in fields}
    return CertificationResults(**merged, **settings)


def _add_zoo(sub):
    p = sub.add_parser("zoo", help="list or rebuild the model zoo",
                       description="The model zoo: trained MNIST models (safetensors + JSON cards).")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    ls = zsub.add_parser("list", help="the shipped models with method, training time and accuracy")
    ls.set_defaults(func=_cmd_zoo_list)
    b = zsub.add_parser("build", help="retrain zoo models from scratch with their recipes",
                        description="Retrain zoo models on MNIST train minus the embedded 5,000 "
                                    "digits. Needs the full MNIST: --data-root or $ROBUSTLAB_DATA.")
    b.add_argument("names", nargs="*", help="models to build (default: all recipes)")
    b.add_argument("--data-root", default=None, help="MNIST root in torchvision's layout")
    b.add_argument("--out", type=Path, default=None, help="output folder (default: the package's zoo)")
    b.set_defaults(func=_cmd_zoo_build)


def _cmd_zoo_list(args) -> int:
    from . import zoo

    print(f"{'name':24} {'method':9} {'train min':>9} {'clean (embedded)':>17} {'suite at its train eps':>23}")
    for name in zoo.names():
        c = zoo.card(name)
        acc = c.get("metrics", {}).get("embedded_clean_accuracy")
        acc_s = f"{100 * acc:.2f} %" if acc is not None else "–"
        # The attack suite's robust accuracy at the threat model the model was trained for.
        cfg, suite = c.get("config", {}), c.get("metrics", {}).get("suite", {})
        row = next((r for r in suite.get("rows", []) if r["norm"] == cfg.get("norm") and r["eps"] == cfg.get("eps")
                    and c["method"] in ("pgd", "trades", "fgsm", "fgsm_rs")), None)
        rob_s = "–" if row is None else \
            f"{100 * row['robust']:.1f} % ({'L2' if row['norm'] == 'l2' else 'Linf'} {row['eps']:g})"
        note = "  (see the card's note)" if "note" in c else ""
        print(f"{name:24} {c['method']:9} {c['training']['seconds'] / 60:9.1f} {acc_s:>17} {rob_s:>23}{note}")
    return 0


def _cmd_zoo_build(args) -> int:
    from . import zoo

    names = args.names or list(zoo.RECIPES)
    unknown = [n for n in names if n not in zoo.RECIPES]
    if unknown:
        raise SystemExit(f"error: no recipe for {', '.join(unknown)}; known: {', '.join(zoo.RECIPES)}")
    for name in names:
        info = zoo.build(name, out=args.out, data_root=args.data_root)
        print(f"built {name}: {info['training']['seconds'] / 60:.1f} min, "
              f"last epoch {info['training']['history'][-1]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustlab", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_certify(sub)
    _add_verify(sub)
    _add_zoo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
