"""The zoo experiments at tiny sizes: they run offline and their numbers mean what they say."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab import experiments as ex
from robustlab import zoo


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "nodata"))  # the embedded set, fast


def hand_fgsm_accuracy(model, x, y, eps):
    """FGSM written out (Goodfellow et al.): one signed step up the cross-entropy, then [0, 1]."""
    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    with torch.no_grad():
        return float((model((x + eps * grad.sign()).clamp(0, 1)).argmax(1) == y).float().mean())


def test_fgsm_table_matches_a_direct_computation():
    res = ex.run_fgsm_table(n=40)
    assert res["data"].startswith("embedded held-out set") and res["eps"] == [0.1, 0.2, 0.3]
    assert set(res["ours"]) == set(res["theirs"]) and all(len(v) == 3 for v in res["theirs"].values())
    test = rl.report.eval_set(n=40)
    for name, row in res["ours"].items():
        model = zoo.load(name)
        expected = [hand_fgsm_accuracy(model, test.x, test.y, eps) for eps in res["eps"]]
        assert row == pytest.approx(expected), name


def test_transfer_matrix_covers_every_classifier():
    res = ex.run_transfer(n=20)
    k = len(zoo.classifiers())
    assert len(res["accuracy"]) == k and all(len(row) == k for row in res["accuracy"])
    i = res["sources"].index("mnist-standard")
    j = res["sources"].index("mnist-pgd-linf-0.3")
    # White-box FGSM at 0.3 breaks the standard model, but its examples transfer poorly to the robust one.
    assert res["accuracy"][i][i] < 0.3 and res["accuracy"][i][j] > 0.8


def test_tradeoff_reads_the_cards_and_the_closed_form():
    cards = {name: json.loads((zoo.ZOO_DIR / f"{name}.json").read_text())
             for name in ("mnist-standard", "mnist-pgd-linf-0.3")}
    trade = ex.run_tradeoff()
    for name, card in cards.items():
        (row,) = [r for r in card["metrics"]["report"]["rows"] if r["norm"] == "linf" and r["eps"] == 0.3]
        assert trade["zoo"][name]["robust"]["linf 0.3"] == row["pgd100"]
    robust, standard = (trade["zoo"][k]["robust"]["linf 0.3"] for k in ("mnist-pgd-linf-0.3", "mnist-standard"))
    assert robust > 0.85 > standard
    # Tsipras et al.'s toy with eta = 2 / sqrt(d) and eps = 2 eta: the standard classifier's
    # accuracy is Phi(eta sqrt(d)) = Phi(2) clean and Phi(-2) under attack, for every d; the
    # robust one keeps p = 0.95.
    for d in (100, 1000, 10_000):
        assert trade["toy"][f"d={d}"] == pytest.approx({"standard_clean": 0.9772499, "standard_robust": 0.0227501,
                                                        "robust_clean": 0.95, "robust_robust": 0.95,
                                                        "eps": 4 / d ** 0.5}, abs=1e-7)


def test_roar_fills_resumes_after_a_kill(tmp_path, monkeypatch):
    calls = []

    def fake_roar_kar(train, test, attributions, *, fill, kar, repeats, epochs, seed, progress):
        calls.append(fill)
        if fill == "blur" and calls.count("blur") == 1:
            raise KeyboardInterrupt  # killed during the third fill
        n = test[0].shape[0]
        correct = {k: torch.ones(repeats, 2, n, dtype=torch.bool) for k in [*attributions, "random"]}
        acc = {k: v.double().mean(2).float() for k, v in correct.items()}
        return rl.interpret.RoarKarResult((0.1, 0.5), acc, {}, torch.full((repeats,), 0.9), epochs, correct, {})

    monkeypatch.setattr(ex.interpret, "roar_kar", fake_roar_kar)
    ckpt = tmp_path / "partial.json"
    with pytest.raises(KeyboardInterrupt):
        ex.run_roar_fills(repeats=1, kar_fills=(), progress=False, checkpoint=ckpt)
    assert calls == ["mean", "zero", "blur"] and set(json.loads(ckpt.read_text())["fills"]) == {"mean", "zero"}
    res = ex.run_roar_fills(repeats=1, kar_fills=(), progress=False, checkpoint=ckpt)
    assert calls[3:] == ["blur", "impute"] and list(res["fills"]) == ["mean", "zero", "blur", "impute"]
    # Other settings do not reuse the checkpoint.
    ex.run_roar_fills(repeats=2, kar_fills=(), progress=False, checkpoint=ckpt)
    assert calls[5:] == ["mean", "zero", "blur", "impute"]


def test_generation_runs_on_the_zoo():
    gen = ex.run_generation(n=8, steps=20, restarts=2, models=("mnist-standard",))
    row = gen["models"]["mnist-standard"]
    assert gen["judge"] == "mnist-gaussian-1.0" and row["source_success"] == 1.0  # L2 eps 6 fools it
    assert row["judges"]["mnist-gaussian-1.0"] == row["judge_agreement"] and set(row["judges"]) == set(gen["judges"])
    # The same generation by hand: APGD towards y + 1 from x, then one random restart (the same
    # generator seed), the point of higher target log-probability kept, judged by the noise-trained CNN.
    test = rl.report.eval_set(n=8)
    target = (test.y + 1) % 10
    source, judge = zoo.load("mnist-standard"), zoo.load("mnist-gaussian-1.0")
    y_pred = source(test.x).argmax(1)
    first = rl.apgd(source, test.x, y_pred, eps=6.0, norm="l2", steps=20, target=target, random_start=False)
    second = rl.apgd(source, test.x, y_pred, eps=6.0, norm="l2", steps=20, target=target, random_start=True,
                     generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = lambda z: source(z).log_softmax(1).gather(1, target[:, None]).squeeze(1)  # noqa: E731
        x_gen = torch.where((lp(second) > lp(first))[:, None, None, None], second, first)
        assert row["reached_from_x"] == pytest.approx(float((source(first).argmax(1) == target).float().mean()))
        assert row["source_success"] == pytest.approx(float((source(x_gen).argmax(1) == target).float().mean()))
        assert row["judge_agreement"] == pytest.approx(float((judge(x_gen).argmax(1) == target).float().mean()))


def test_main_writes_json(tmp_path):
    assert ex.main(["tradeoff", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "tradeoff.json").read_text())
    assert written.pop("wall_seconds") >= 0 and written.pop("torch") == torch.__version__
    assert written == json.loads(json.dumps(ex.run_tradeoff()))
    with pytest.raises(SystemExit):
        ex.main(["nothing"])


def test_roar_fills_runs_every_fill_with_every_control(monkeypatch):
    seen, results = [], []

    def fake_roar_kar(train, test, attributions, *, fill, kar, repeats, epochs, seed, progress):
        seen.append((fill, sorted(attributions), kar))
        for a_tr, a_te in attributions.values():
            assert a_tr.shape == train[0].shape and a_te.shape == test[0].shape
        g = torch.Generator().manual_seed(len(seen))
        n = test[0].shape[0]
        correct = {k: torch.rand(repeats, 3, n, generator=g) < 0.3 + 0.1 * i
                   for i, k in enumerate([*attributions, "random"])}
        kar_correct = {k: ~v for k, v in correct.items()} if kar else {}
        acc = lambda d: {k: v.double().mean(2).float() for k, v in d.items()}  # noqa: E731
        res = rl.interpret.RoarKarResult((0.1, 0.5, 0.9), acc(correct), acc(kar_correct),
                                         torch.full((repeats,), 0.9), epochs, correct, kar_correct)
        results.append(res)
        return res

    monkeypatch.setattr(ex.interpret, "roar_kar", fake_roar_kar)
    res = ex.run_roar_fills(repeats=2, progress=False)
    assert [f for f, _, _ in seen] == ["mean", "zero", "blur", "impute"]
    assert [k for _, _, k in seen] == [True] * 4  # KAR (LeRF) with every fill, so each fill's leak shows twice
    assert seen[0][1] == ["edge", "gradient (random weights)", "gradient (robust)", "gradient (standard)", "image"]
    assert set(res["controls"]) == {"edge", "gradient (random weights)", "image", "random"}
    impute = res["fills"]["impute"]
    assert set(impute["kar_scores"]) == set(impute["roar_scores"]) == set(res["fills"]["zero"]["kar_scores"])
    # Three ways to one score: roar_kar_scores on mean curves, the mean of the per-repeat scores,
    # and the mean of the per-digit scores.
    for mode in ("roar", "kar"):
        expected = rl.interpret.roar_kar_scores(results[-1])
        for name, per_repeat in impute[f"{mode}_scores"].items():
            assert len(per_repeat) == 2 and len(impute[f"{mode}_per_digit"][name]) == 1000  # embedded: 1,000 test
            assert np.mean(per_repeat) == pytest.approx(expected[name][mode], abs=1e-6)
            assert np.mean(impute[f"{mode}_per_digit"][name]) == pytest.approx(expected[name][mode], abs=1e-4)
            # Per repeat and digit: each row's mean is that repeat's score, the mean over rows the per-digit one.
            rows = np.asarray(impute[f"{mode}_per_digit_repeats"][name])
            assert rows.shape == (2, 1000)
            assert rows.mean(1) == pytest.approx(per_repeat, abs=1e-4)
            assert rows.mean(0) == pytest.approx(impute[f"{mode}_per_digit"][name], abs=1e-3)
    assert res["data"].startswith("embedded held-out set")


def test_robust_overfitting_records_its_curves_and_control_and_cleans_up(tmp_path):
    ckpt = tmp_path / ".robust_overfitting.partial.json"
    res = ex.run_robust_overfitting(n_train=4900, epochs=2, control_epochs=1, ramp_epochs=1, steps=2,
                                    checkpoint=ckpt)
    assert res["data"].startswith("embedded MNIST: 4900 training digits, 100 held out")
    assert len(res["history"]) == 2 and len(res["control"]["history"]) == 1
    assert res["control"]["config"]["eps_ramp_epochs"] == 0 and res["config"]["eps_ramp_epochs"] == 1
    for row in res["history"]:
        assert 0 <= row["heldout_pgd"] <= row["heldout_clean"] <= 1 and 0 <= row["train_pgd"] <= row["train_clean"]
    best = res["best_epoch"]
    assert res["best"]["heldout_pgd"] == max(h["heldout_pgd"] for h in res["history"])
    assert res["best"] == {k: res["history"][best - 1][k] for k in res["best"]}
    assert not list(tmp_path.glob("*.pt"))  # the per-run checkpoints are removed once the result exists


def test_main_records_the_torch_version(tmp_path, monkeypatch):
    monkeypatch.setitem(ex.EXPERIMENTS, "tiny", lambda: {"value": 1})
    assert ex.main(["tiny", "--out", str(tmp_path)]) == 0
    stored = json.loads((tmp_path / "tiny.json").read_text())
    assert stored["torch"] == torch.__version__ and stored["value"] == 1
