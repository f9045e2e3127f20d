"""The zoo experiments at tiny sizes: they run offline and their numbers mean what they say."""

import json

import pytest
import torch

import robustlab as rl
from robustlab import experiments as ex
from robustlab import interpret, zoo
from robustlab.train import evaluate_accuracy


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "nodata"))  # the embedded set, fast


def test_fgsm_table_matches_a_direct_computation():
    res = ex.run_fgsm_table(n=40)
    assert res["data"].startswith("embedded held-out set") and res["eps"] == [0.1, 0.2, 0.3]
    test = rl.report.eval_set(n=40)
    model = zoo.load("mnist-gradreg")
    assert res["ours"]["mnist-gradreg"][1] == evaluate_accuracy(model, rl.fgsm(model, test.x, test.y, eps=0.2), test.y)
    assert res["theirs"]["mnist-standard"] == [0.727, 0.277, 0.113]


def test_transfer_matrix_covers_every_classifier():
    res = ex.run_transfer(n=20)
    k = len(zoo.classifiers())
    assert len(res["accuracy"]) == k and all(len(row) == k for row in res["accuracy"])
    i = res["sources"].index("mnist-standard")
    j = res["sources"].index("mnist-pgd-linf-0.3")
    # White-box FGSM at 0.3 breaks the standard model, but its examples transfer poorly to the robust one.
    assert res["accuracy"][i][i] < 0.3 and res["accuracy"][i][j] > 0.8


def test_alignment_table_and_tradeoff():
    res = ex.run_alignment(n=10)
    assert set(res["alignment"]) == set(zoo.classifiers())
    assert all(-1 <= v <= 1 for row in res["alignment"].values() for v in row.values())
    assert all(0 <= v <= 1 for row in res["mass_near_digit"].values() for v in row.values())
    trade = ex.run_tradeoff()
    assert trade["zoo"]["mnist-pgd-linf-0.3"]["robust"]["linf 0.3"] > 0.85 > trade["zoo"]["mnist-standard"]["robust"]["linf 0.3"]
    assert trade["toy"]["d=1000"] == interpret.tsipras_accuracies(d=1000, p=0.95)


def test_generation_and_manifold_run_on_the_zoo():
    gen = ex.run_generation(n=8, steps=20, models=("mnist-standard",))
    row = gen["models"]["mnist-standard"]
    assert gen["judge"] == "mnist-standard-mlp" and row["source_success"] == 1.0  # L2 eps 6 fools it
    test = rl.report.eval_set(n=8)
    direct = interpret.targeted_generation(zoo.load("mnist-standard"), zoo.load("mnist-standard-mlp"), test.x,
                                           (test.y + 1) % 10, eps=6.0, steps=20)
    assert row["judge_agreement"] == direct.judge_agreement
    man = ex.run_manifold(n=8, steps=10, refine_steps=5, models=("mnist-standard",))
    row = man["models"]["mnist-standard"]
    assert row["success_rate"] > 0.5 and row["distance_successful"] > 0 and man["clean_distance"] > 0


def test_main_writes_json(tmp_path):
    assert ex.main(["tradeoff", "--out", str(tmp_path)]) == 0
    assert "zoo" in json.loads((tmp_path / "tradeoff.json").read_text())
    with pytest.raises(SystemExit):
        ex.main(["nothing"])
