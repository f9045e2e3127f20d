"""The robustness report and the command line."""

import csv
import io
import json

import pytest
import torch

from robustlab import attacks, cli, evaluate, report, stats, zoo
from robustlab.report import ThreatModel
from robustlab.testing import LinearBinary, Quadratic


def test_report_cascade_on_a_linear_model():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 4, 4, generator=g)
    model = LinearBinary(w, b=0.0)
    x = 0.2 + 0.6 * torch.rand(400, 1, 4, 4, generator=g)
    f = x.flatten(1) @ w.flatten()
    y = (f > 0).long()
    y[:40] = 1 - y[:40]  # 10 % wrong labels
    rows = report.robustness_report(model, x, y, threat_models=[ThreatModel("linf", 0.05),
                                                                  ThreatModel("l2", 0.1, True)],
                                    restarts=2)
    linf, l2 = rows
    correct = (f > 0).long() == y
    # For a linear model, FGSM and FGM are the exact worst cases, and PGD cannot do better.
    assert linf.clean == pytest.approx(0.9)
    assert linf.single_step == pytest.approx(float((correct & (f.abs() > 0.05 * w.abs().sum())).float().mean()))
    assert linf.pgd40 == pytest.approx(linf.single_step) and linf.pgd100 == pytest.approx(linf.single_step)
    assert l2.single_step == pytest.approx(float((correct & (f.abs() > 0.1 * w.norm())).float().mean()))
    assert l2.pgd40 is None and l2.pgd100 is None and l2.restarts == 0 and l2.n == 400


def test_report_cascade_where_pgd_beats_fgsm():
    """One pixel, Quadratic(c=0.5, a=200): class 1 iff |x - c| > r0 = sqrt(2 / a) = 0.1. Against
    label 1 an attack must bring x within r0 of c. FGSM jumps the whole eps = 0.3 towards c and
    overshoots when |x - c| < eps - r0 = 0.2; PGD walks to c (its steps, 2.5 * eps / 40, are
    shorter than r0) whenever |x - c| < eps + r0 = 0.4, whatever its random start. So each
    column has a hand-derived value, and PGD-40 really breaks what FGSM leaves standing.
    (float64: in float32 the far examples' softmax saturates and their gradient is exactly 0.)"""
    model = Quadratic(torch.full((1, 1, 1), 0.5, dtype=torch.float64), a=200.0)
    d = torch.tensor([0.05, 0.12, 0.17, 0.25, 0.35, 0.45], dtype=torch.float64)  # away from the thresholds
    x = torch.cat([0.5 - d, 0.5 + d]).view(-1, 1, 1, 1)
    y = torch.ones(12, dtype=torch.long)
    (row,) = report.robustness_report(model, x, y, threat_models=[ThreatModel("linf", 0.3)], restarts=2)
    # d = 0.05 is misclassified; FGSM breaks d = 0.25 and 0.35; PGD also breaks d = 0.12 and 0.17.
    assert (row.clean, row.single_step, row.pgd40, row.pgd100) == pytest.approx((10 / 12, 6 / 12, 2 / 12, 2 / 12))

    # The same numbers from each attack run on its own on every example (no cascade), taking
    # the per-example worst case: the cascade must not lose or double-count an example.
    def fooled(x_adv):
        return model(x_adv).argmax(1) != y

    g = torch.Generator().manual_seed(1)
    correct = ~fooled(x)
    by_fgsm = fooled(attacks.fgsm(model, x, y, eps=0.3))
    by_pgd40 = fooled(attacks.pgd(model, x, y, eps=0.3, alpha=2.5 * 0.3 / 40, steps=40, generator=g))
    by_pgd100 = fooled(attacks.pgd(model, x, y, eps=0.3, alpha=2.5 * 0.3 / 100, steps=100, restarts=2, generator=g))
    standing = correct & ~by_fgsm
    assert row.single_step == pytest.approx(float(standing.float().mean()))
    standing &= ~by_pgd40
    assert row.pgd40 == pytest.approx(float(standing.float().mean()))
    standing &= ~by_pgd100
    assert row.pgd100 == pytest.approx(float(standing.float().mean()))


def test_report_first_columns_match_direct_computations_on_a_cnn(small_cnn, mnist_batch):
    """Clean accuracy and the FGSM column (both deterministic) recomputed on every example."""
    x, y = mnist_batch
    (row,) = report.robustness_report(small_cnn, x, y, threat_models=[ThreatModel("linf", 0.1)], restarts=1)
    x_adv = attacks.fgsm(small_cnn, x, y, eps=0.1)
    with torch.no_grad():
        correct = small_cnn(x).argmax(1) == y
        survives_fgsm = small_cnn(x_adv).argmax(1) == y
    assert 0 < int((correct & ~survives_fgsm).sum())  # FGSM really breaks some (not a vacuous equality)
    assert row.clean == pytest.approx(float(correct.float().mean()))
    assert row.single_step == pytest.approx(float((correct & survives_fgsm).float().mean()))
    assert row.n == 32 and row.restarts == 1


def test_csv_and_markdown():
    rows = [report.ReportRow("linf", 0.3, 0.99, 0.5, 0.4, 0.38, 5, 100),
            report.ReportRow("l2", 5.0, 0.99, 0.097, None, None, 0, 100)]
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows, "m"))))
    assert parsed[0]["pgd100"] == "0.38" and parsed[1]["pgd40"] == "" and parsed[1]["model"] == "m"
    md = report.to_markdown(rows, "m", "MNIST test")
    assert "| L∞ ε=0.3 | 99.0 | 50.0 | 40.0 | 38.0 (x5) |" in md and "PGD-100 x restarts" in md
    assert "| L2 ε=5 | 99.0 | 9.7 | – | – |" in md


def test_parse_threat_model():
    assert report.parse_threat_model("linf:0.3") == ThreatModel("linf", 0.3, False)
    assert report.parse_threat_model("L2:5:single") == ThreatModel("l2", 5.0, True)
    for bad, match in [("l1:0.3", "must look like"), ("linf:abc", "not a number"), ("linf:-1", "eps must be >= 0")]:
        with pytest.raises(ValueError, match=match):
            report.parse_threat_model(bad)


def test_eval_set_says_which_data_it_used(tmp_path):
    offline = report.eval_set(root=tmp_path, n=100)
    assert offline.source.startswith("embedded held-out set") and offline.x.shape[0] == 100
    assert torch.equal(torch.bincount(offline.y), torch.full((10,), 10))  # evenly over classes
    # Classes alternate, so any prefix (the first images of a figure) covers every class.
    assert offline.y[:20].tolist() == list(range(10)) * 2
    full = report.eval_set(root=tmp_path)
    assert full.x.shape[0] == 5000 and full.y[:10].tolist() == list(range(10))
    assert torch.equal(torch.bincount(full.y[:1000]), torch.full((10,), 100))


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["certify", "--help"], ["zoo", "--help"],
                                  ["zoo", "build", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    assert "usage: robustlab" in capsys.readouterr().out


def test_zoo_list(capsys):
    assert cli.main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.names():
        assert name in out
    # The robust column is the suite's record at the model's own threat model, from its card.
    row = next(r for r in zoo.card("mnist-pgd-linf-0.3")["metrics"]["suite"]["rows"] if r["norm"] == "linf"
               and r["eps"] == 0.3)
    line = next(ln for ln in out.splitlines() if ln.startswith("mnist-pgd-linf-0.3 "))
    assert f"{100 * row['robust']:.1f} % (Linf 0.3)" in line
    assert "(see the card's note)" in next(ln for ln in out.splitlines() if ln.startswith("mnist-fgsm-linf-0.3 "))


def test_train_with_a_bad_config_fails_before_training(capsys, tmp_path):
    code = cli.main(["train", "--method", "pgd", "--eps", "-0.3", "--out", str(tmp_path / "m.safetensors")])
    assert code == 2 and "eps must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_train_and_evaluate_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "nodata"))
    # No MNIST train here: training must fail with the data error, before anything is written.
    assert cli.main(["train", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    name = zoo.names()[0]
    out_csv = tmp_path / "r.csv"
    assert cli.main(["evaluate", name, "--attacks", "cascade", "-n", "20", "--restarts", "1", "--csv", str(out_csv),
                     "--markdown", str(tmp_path / "r.md")]) == 0
    printed = capsys.readouterr().out
    assert "data: embedded held-out set" in printed and f"**{name}**" in printed
    assert len(list(csv.DictReader(out_csv.open()))) == len(report.DEFAULT_THREAT_MODELS)
    assert cli.main(["evaluate", name, "--attacks", "cascade", "-n", "20", "--threat-models", "linf:0.3",
                     "--final-steps", "50", "--restarts", "2"]) == 0
    assert "+ PGD-50 x restarts" in capsys.readouterr().out
    assert cli.main(["evaluate", name, "--threat-models", "linf"]) == 2
    # The default is the attack suite: one JSON record per threat model, the table from them.
    res = tmp_path / "suite"
    assert cli.main(["evaluate", name, "-n", "20", "--version", "quick", "--threat-models", "linf:0.1,l2:1",
                     "--results-dir", str(res)]) == 0
    printed = capsys.readouterr().out
    assert "attack suite 'quick'" in printed and "| L∞ ε=0.1 |" in printed and "| L2 ε=1 |" in printed
    record = json.loads((res / f"{name}-linf-0.1.json").read_text())
    assert record["n"] == 20 and record["torch"] == torch.__version__ and record["data"].startswith("embedded")
    counted = sum(record["broken_by"].values())
    assert record["robust"] == pytest.approx(1 - counted / 20)
    assert sorted(i for v in record["broken"].values() for i in v) == sorted(set(
        i for v in record["broken"].values() for i in v))  # each example broken once, by one attack
    assert f"| {100 * record['robust']:.1f} |" in printed
    low, high = stats.proportion_interval(round(20 * record["robust"]), 20)
    assert f"| {100 * low:.1f}–{100 * high:.1f} |" in printed  # the table gives the 95 % interval
    # A second run reuses the stored record instead of recomputing it.
    record["robust"] = 0.123
    (res / f"{name}-linf-0.1.json").write_text(json.dumps(record))
    assert cli.main(["evaluate", name, "-n", "20", "--version", "quick", "--threat-models", "linf:0.1",
                     "--results-dir", str(res)]) == 0
    assert "| 12.3 |" in capsys.readouterr().out
    # ... but not a record of other weights (a retrained model): that one is recomputed.
    record["digest"] = "0" * 16
    (res / f"{name}-linf-0.1.json").write_text(json.dumps(record))
    assert cli.main(["evaluate", name, "-n", "20", "--version", "quick", "--threat-models", "linf:0.1",
                     "--results-dir", str(res)]) == 0
    assert "| 12.3 |" not in capsys.readouterr().out
    assert json.loads((res / f"{name}-linf-0.1.json").read_text())["digest"] == evaluate.state_digest(
        zoo.load(name), report.eval_set(n=20).x, report.eval_set(n=20).y)


def test_evaluate_sharded_under_torchrun_equals_one_process(tmp_path):
    """`torchrun -m robustlab evaluate` attacks a slice of the digits per process and gathers the
    records; with the seeds following the global position the result equals one process's."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_DATA": str(tmp_path / "nodata")}
    common = ["-m", "robustlab", "evaluate", "mnist-standard", "-n", "24", "--version", "quick",
              "--threat-models", "l2:1", "--batch-size", "4"]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", "0", "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0",
                    *common, "--results-dir", str(tmp_path / "ddp")],
                   check=True, capture_output=True, timeout=300, env=env)
    subprocess.run([sys.executable, *common, "--results-dir", str(tmp_path / "one")],
                   check=True, capture_output=True, timeout=300, env=env)
    ddp = json.loads((tmp_path / "ddp" / "mnist-standard-l2-1.json").read_text())
    one = json.loads((tmp_path / "one" / "mnist-standard-l2-1.json").read_text())
    assert ddp["processes"] == 2 and one["processes"] == 1
    for key in ("clean", "robust", "broken_by", "broken", "n"):
        assert ddp[key] == one[key], key
    assert 0 < sum(one["broken_by"].values()) < 24


def test_certify_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "nodata"))
    args = ["certify", "mnist-gaussian-0.5", "--sigma", "0.5,0.25", "-N", "4", "--n0", "20", "--n", "300",
            "--radii", "0,0.5", "--results-dir", str(tmp_path / "res"), "--markdown", str(tmp_path / "s.md"),
            "--plot", str(tmp_path / "curves.png")]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "embedded held-out set" in printed and "n0=20, n=300, alpha=0.001" in printed
    table = (tmp_path / "s.md").read_text().splitlines()
    assert table[2].startswith("| model | sigma | certified correct | abstain | r>=0 | r>=0.5 | ACR")
    assert [line.split(" | ")[1] for line in table[4:]] == ["0.5", "0.25"]
    rows = list(csv.DictReader((tmp_path / "res" / "mnist-gaussian-0.5-sigma0.5.csv").open()))
    assert len(rows) == 4 and set(rows[0]) == {"index", "label", "prediction", "radius", "correct", "time",
                                               "sigma", "n0", "n", "alpha"}
    # The summary is computed from these rows: correct count and ACR.
    correct = sum(r["correct"] == "True" for r in rows)
    acr = sum(float(r["radius"]) for r in rows if r["correct"] == "True") / 4
    assert f"| {correct} / 4 |" in table[4] and f"| {acr:.3f} |" in table[4]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["certify", "mnist-gaussian-0.5", "--sigma", "0", "-N", "2"]) == 2
    assert "sigma must be > 0" in capsys.readouterr().err


def test_torchrun_with_two_gloo_processes_matches_one_process(tmp_path):
    """`torchrun -m robustlab train` uses DistributedDataParallel and ends with the weights of
    a single-process run on the same global batches."""
    import subprocess
    import sys

    import numpy as np
    from safetensors.torch import load_file

    from .test_data import write_mnist_like

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=200).astype(np.uint8)
    write_mnist_like(tmp_path, "MNIST", images, labels, images[:10], labels[:10])
    common = ["-m", "robustlab", "train", "--data-root", str(tmp_path), "--method", "fgsm",
              "--eps", "0.1", "--epochs", "2", "--batch-size", "20", "--lr", "0.01"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", "0", "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0",
                    *common, "--out", str(tmp_path / "ddp.safetensors")],
                   check=True, capture_output=True, timeout=300, env=env)
    subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one.safetensors")],
                   check=True, capture_output=True, timeout=300, env=env)
    ddp, one = load_file(str(tmp_path / "ddp.safetensors")), load_file(str(tmp_path / "one.safetensors"))
    assert ddp.keys() == one.keys()
    # Summation order differs between 2x10 and 1x20 examples; Adam's normalisation can amplify
    # that float noise in weights whose gradients are tiny, hence 1e-4 rather than 1e-6.
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], atol=1e-4, rtol=1e-4)
    torch.manual_seed(0)  # the CLI's seed: the initial weights both runs started from
    initial = __import__("robustlab").models.SmallCNN().state_dict()
    assert not torch.allclose(one["1.weight"], initial["1.weight"], atol=1e-3)


def test_certify_sharded_under_torchrun_gathers_every_image(tmp_path):
    """`torchrun -m robustlab certify`: each process certifies a slice; process 0 writes all rows,
    in image order, with the same labels and settings as a single process."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_DATA": str(tmp_path / "nodata")}
    common = ["-m", "robustlab", "certify", "mnist-gaussian-0.5", "--sigma", "0.5", "-N", "5", "--n0", "20",
              "--samples", "200", "--batch-size", "100"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "0", "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0",
                          *common, "--results-dir", str(tmp_path / "ddp")],
                         check=True, capture_output=True, text=True, timeout=300, env=env)
    assert "2 processes" in ddp.stdout
    subprocess.run([sys.executable, *common, "--results-dir", str(tmp_path / "one")],
                   check=True, capture_output=True, timeout=300, env=env)
    read = lambda d: list(csv.DictReader((tmp_path / d / "mnist-gaussian-0.5-sigma0.5.csv").open()))
    ddp_rows, one_rows = read("ddp"), read("one")
    assert [r["index"] for r in ddp_rows] == ["0", "1", "2", "3", "4"]
    assert [r["label"] for r in ddp_rows] == [r["label"] for r in one_rows]
    assert all(r["n"] == "200" and r["sigma"] == "0.5" for r in ddp_rows)
    # Clean digits and a model trained with this noise: most are certified correctly either way.
    assert sum(r["correct"] == "True" for r in ddp_rows) >= 3


def test_suite_summary_quotes_the_number_with_its_interval_protocol_and_digits():
    record = {"robust": 0.88, "n": 1000, "norm": "linf", "eps": 0.3, "version": "standard",
              "data": "MNIST test, 1,000 examples"}
    text = report.suite_summary(record)
    low, high = stats.proportion_interval(880, 1000)
    assert text.startswith("88.0 % (95 % interval ")
    assert f"{100 * low:.1f}-{100 * high:.1f} %" in text and "85.8-89.9" in text
    assert "at Linf 0.3" in text and "MNIST test, 1,000 examples" in text and "(standard)" in text
    assert "at L2 2" in report.suite_summary(dict(record, norm="l2", eps=2.0))


def test_verify_cli_prints_verified_accuracy_with_interval(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "nodata"))
    assert cli.main(["verify", "mnist-pgd-linf-0.3", "-n", "6", "--eps", "0.01,0.3", "--methods", "ibp"]) == 0
    out = capsys.readouterr().out
    test = report.eval_set(n=6)
    from robustlab import bounds
    for eps in (0.01, 0.3):
        k = int(bounds.verify(zoo.load("mnist-pgd-linf-0.3"), test.x, test.y, eps=eps, method="ibp").certified.sum())
        low, high = stats.proportion_interval(k, 6)
        assert f"Linf {eps:g} ibp  : verified {100 * k / 6:.1f} % ({k}/6; 95 % interval " \
               f"{100 * low:.1f}-{100 * high:.1f} %)" in out


@pytest.mark.parametrize("argv, match", [(["--methods", "ibp,exact"], "unknown method 'exact'"),
                                         (["--eps", "0.1,big"], "--eps must be comma-separated")])
def test_verify_cli_rejects_bad_options(argv, match):
    with pytest.raises(SystemExit, match=match):
        cli.main(["verify", "mnist-standard", "-n", "2", *argv])
