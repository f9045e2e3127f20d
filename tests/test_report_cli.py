"""The robustness report and the command line."""

import csv
import io

import pytest
import torch

from robustlab import cli, report, zoo
from robustlab.report import ThreatModel
from robustlab.testing import LinearBinary


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


def test_report_columns_never_increase(small_cnn, mnist_batch):
    x, y = mnist_batch
    rows = report.robustness_report(small_cnn, x, y, threat_models=[ThreatModel("linf", 0.1)], restarts=1)
    r = rows[0]
    assert r.clean >= r.single_step >= r.pgd40 >= r.pgd100


def test_csv_and_markdown():
    rows = [report.ReportRow("linf", 0.3, 0.99, 0.5, 0.4, 0.38, 5, 100),
            report.ReportRow("l2", 5.0, 0.99, 0.097, None, None, 0, 100)]
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows, "m"))))
    assert parsed[0]["pgd100"] == "0.38" and parsed[1]["pgd40"] == "" and parsed[1]["model"] == "m"
    md = report.to_markdown(rows, "m", "MNIST test")
    assert "| L∞ ε=0.3 | 99.0 | 50.0 | 40.0 | 38.0 (x5) |" in md
    assert "| L2 ε=5 | 99.0 | 9.7 | – | – |" in md


def test_eval_set_says_which_data_it_used(tmp_path):
    offline = report.eval_set(root=tmp_path, n=100)
    assert offline.source.startswith("embedded held-out set") and offline.x.shape[0] == 100
    assert torch.equal(torch.bincount(offline.y), torch.full((10,), 10))  # evenly over classes


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["zoo", "--help"], ["zoo", "build", "--help"]])
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
    assert cli.main(["evaluate", name, "-n", "20", "--restarts", "1", "--csv", str(out_csv),
                     "--markdown", str(tmp_path / "r.md")]) == 0
    printed = capsys.readouterr().out
    assert "data: embedded held-out set" in printed and f"**{name}**" in printed
    assert len(list(csv.DictReader(out_csv.open()))) == len(report.DEFAULT_THREAT_MODELS)
