"""Claims as code: verdicts flip with the effect, and the book asserts only supported claims."""

import json

import numpy as np
import pytest
import torch

from robustlab import claims, zoo

from .conftest import ROOT

RESULTS = ROOT / "results" / "claims.json"


def test_verdict_by_hand():
    assert claims.verdict(0.01, 0.2) == "supported"
    assert claims.verdict(-0.3, -0.01) == "not supported"
    assert claims.verdict(-0.1, 0.1) == "inconclusive"
    with pytest.raises(ValueError, match="high"):
        claims.verdict(0.2, 0.1)


def test_bootstrap_verdict_flips_when_the_effect_is_removed():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, 400)
    with_effect = noise - noise.mean() + 0.3  # a true mean difference of 0.3
    without = noise - noise.mean()  # the same spread, no effect
    mean, low, high = claims.paired_bootstrap(with_effect)
    assert mean == pytest.approx(0.3) and 0.15 < low < 0.3 < high < 0.45
    assert claims.verdict(low, high) == "supported"
    assert claims.verdict(*claims.paired_bootstrap(without)[1:]) == "inconclusive"
    assert claims.verdict(*claims.paired_bootstrap(-with_effect)[1:]) == "not supported"
    # Seeded: the same seed gives the same interval.
    assert claims.paired_bootstrap(with_effect, seed=3) == claims.paired_bootstrap(with_effect, seed=3)
    with pytest.raises(ValueError, match="at least 2 finite"):
        claims.paired_bootstrap(np.array([1.0]))
    with pytest.raises(ValueError, match="at least 2 finite"):
        claims.paired_bootstrap(np.ones((2, 2, 2)))
    # (repeats, N): one repeat is the 1-D bootstrap; repeats that agree narrow nothing away.
    assert claims.paired_bootstrap(with_effect[None, :]) == claims.paired_bootstrap(with_effect)
    two_stage = claims.paired_bootstrap(np.stack([with_effect + 0.5, with_effect - 0.5]))
    assert two_stage[0] == pytest.approx(0.3) and two_stage[1] < low and two_stage[2] > high
    # Three repeats: the interval contains Student's t-interval of the per-repeat means, which a
    # percentile bootstrap over three values alone could not reach.
    import scipy.stats

    three = np.stack([with_effect + 0.1, with_effect - 0.05, with_effect + 0.02])
    mean3, low3, high3 = claims.paired_bootstrap(three)
    per = three.mean(1)
    half = scipy.stats.t.ppf(0.975, 2) * per.std(ddof=1) / np.sqrt(3)
    assert low3 <= mean3 - half + 1e-12 and high3 >= mean3 + half - 1e-12 and high3 - low3 > per.max() - per.min()
    with pytest.raises(ValueError, match="repeats >= 1"):
        claims.paired_bootstrap(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="level"):
        claims.paired_bootstrap(with_effect, level=1.0)


def test_bootstrap_of_a_correlation_flips_when_the_pairing_is_broken():
    import scipy.stats

    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    b = a + rng.normal(scale=1.0, size=300)  # correlated with a (rho about 0.7)
    rho = lambda u, v: float(scipy.stats.spearmanr(u, v).statistic)  # noqa: E731
    value, low, high = claims.bootstrap(rho, a, b)
    assert 0.55 < low < value < high < 0.85 and claims.verdict(low, high) == "supported"
    # Rows are resampled together: shuffling b against a removes the effect.
    assert claims.verdict(*claims.bootstrap(rho, a, rng.permutation(b))[1:]) == "inconclusive"
    assert claims.verdict(*claims.bootstrap(rho, a, -b)[1:]) == "not supported"
    with pytest.raises(ValueError, match="first dimension"):
        claims.bootstrap(rho, a, b[:10])
    with pytest.raises(ValueError, match="at least one array"):
        claims.bootstrap(rho)
    with pytest.raises(ValueError, match="NaN or inf"):
        claims.bootstrap(rho, a, np.where(b > 2, np.inf, b))


def test_the_toy_claim_runs_from_the_package():
    c = claims.claim_toy_2d_robust_gradients_follow_data(seeds=2, n=100)
    assert c.name == "toy_2d_robust_gradients_follow_data" and len(c.detail["alignment_per_seed"]) == 2


def test_a_zoo_claim_is_inconclusive_when_both_sides_are_the_same_model(monkeypatch):
    real = claims.claim_clean_accuracy_falls_with_training_eps(n=300)
    assert real.name == "clean_accuracy_falls_with_training_eps" and real.low <= real.effect <= real.high
    assert set(real.detail["accuracy"]) == {"mnist-pgd-linf-0.1", "mnist-pgd-linf-0.3"}
    same = zoo.load("mnist-pgd-linf-0.3")
    monkeypatch.setattr(zoo, "load", lambda name: same)
    removed = claims.claim_clean_accuracy_falls_with_training_eps(n=300)
    assert removed.effect == 0.0 and removed.verdict == "inconclusive"


def test_generation_claim_is_inconclusive_when_the_models_are_the_same(monkeypatch):
    same = zoo.load("mnist-standard")
    real_load = zoo.load
    monkeypatch.setattr(zoo, "load", lambda name: same if name != claims.JUDGE else real_load(name))
    c = claims.claim_l2_robust_generation_looks_like_target(n=20, steps=10, restarts=1)
    assert c.effect == 0.0 and c.verdict == "inconclusive" and c.detail["judge"] == "mnist-gaussian-1.0"
    row = c.detail["models"]["mnist-standard"]
    # With one restart the attack starts at x only, deterministically: both runs agree.
    assert row["reached_target"] == row["reached_target_from_x_alone"] > 0.5
    assert row["judge_agrees"] == row["judge_agrees_from_x_alone"]


def test_manifold_claim_compares_every_model_on_the_same_digits(monkeypatch):
    c = claims.claim_l2_robust_adversarials_nearer_manifold(n=80, steps=10, refine_steps=5)
    assert c.detail["models"] == ["mnist-standard", "mnist-pgd-linf-0.3", "mnist-pgd-l2-2.0", "mnist-trades-linf-0.3"]
    common = c.detail["digits_broken_for_all"]
    assert 2 <= common <= min(round(r * 80) for r in c.detail["success_rate"].values())
    d = c.detail["mean_distance_on_common_digits"]
    assert c.effect == pytest.approx(d["mnist-standard"] - d["mnist-pgd-l2-2.0"], rel=1e-5)
    # The same network on both sides: no effect, whatever the digits.
    same = zoo.load("mnist-standard")
    real_load = zoo.load
    monkeypatch.setattr(zoo, "load", lambda name: same if name in c.detail["models"] else real_load(name))
    removed = claims.claim_robust_adversarials_nearer_manifold(n=12, steps=10, refine_steps=5)
    assert removed.effect == 0.0 and removed.verdict == "inconclusive"
    assert removed.detail["digits_broken_for_all"] == round(removed.detail["success_rate"]["mnist-standard"] * 12)


def test_independent_randomisation_claim_compares_the_first_layer_with_the_upper_ones(monkeypatch):
    real = claims.claim_robust_maps_changed_most_by_first_layer(n=12)
    layers = real.detail["mean_spearman_abs_per_layer"]
    assert set(layers) == {"mnist-pgd-linf-0.3", "mnist-standard"} and real.detail["mode"].startswith("independent")
    assert list(layers["mnist-pgd-linf-0.3"]) == ["8", "6", "3", "1"]  # from the logits down to the first conv
    # Known rows: per digit, the smallest upper-layer correlation minus the first layer's.
    rows = torch.tensor([[0.9, 0.8], [0.5, 0.7], [0.6, 0.9], [0.2, 0.95]])  # layers 8, 6, 3, 1; two digits

    def fake(model, x, target, attribute, *, mode, generator):
        assert mode == "independent"
        return claims.sanity.interpret.RandomizationResult(mode, ["8", "6", "3", "1"], rows, rows)

    monkeypatch.setattr(claims.sanity.interpret, "randomization_test", fake)
    c = claims.claim_robust_maps_changed_most_by_first_layer(n=2)
    assert c.effect == pytest.approx(((0.5 - 0.2) + (0.7 - 0.95)) / 2)
    assert c.detail["mean_margin"]["mnist-pgd-linf-0.3"] == pytest.approx(c.effect)


def test_alignment_distance_claim_reports_every_model():
    c = claims.claim_alignment_grows_with_boundary_distance(n=40, steps=20)
    assert set(c.detail["models"]) == {"mnist-standard", "mnist-pgd-l2-2.0", "mnist-pgd-linf-0.3"}
    for r in c.detail["models"].values():
        assert 0 <= r["digits"] <= r["digits_correct"] <= 40
        if "spearman" in r:
            assert -1 <= r["low"] <= r["spearman"] <= r["high"] <= 1
    assert c.detail["models"]["mnist-standard"]["digits"] >= 30  # FMN breaks nearly every standard digit
    assert c.effect == c.detail["models"]["mnist-standard"]["spearman"] and c.verdict == claims.verdict(c.low, c.high)


def _fake_roar_fills(folder, robust, image):
    """A roar_fills.json whose ROAR and KAR scores per repeat and digit are the given (repeats, N) arrays."""
    robust, image = np.atleast_2d(robust), np.atleast_2d(image)
    per = {"gradient (robust)": robust.tolist(), "gradient (standard)": np.zeros_like(robust).tolist(),
           "image": image.tolist(), "edge": np.zeros_like(robust).tolist()}
    scores = {k: np.mean(v, axis=1).tolist() for k, v in per.items()}
    per_digit = {k: np.mean(v, axis=0).tolist() for k, v in per.items()}
    entry = {"fractions": [0.1, 0.5], **{f"{m}_{k}": v for m in ("roar", "kar") for k, v in
                                        (("scores", scores), ("per_digit", per_digit), ("per_digit_repeats", per))}}
    (folder / "roar_fills.json").write_text(json.dumps({"data": "synthetic", "repeats": len(robust), "epochs": 1,
                                                        "fills": {"impute": entry}}))


def test_roar_claims_flip_with_the_stored_per_digit_scores(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(0.3, 0.1, 500)
    _fake_roar_fills(tmp_path, base + 0.05, base)
    assert claims.claim_roar_robust_gradient_beats_image_control(results=tmp_path).verdict == "supported"
    assert claims.claim_kar_robust_gradient_beats_image_control(results=tmp_path).verdict == "supported"
    _fake_roar_fills(tmp_path, base, base + 0.05)
    assert claims.claim_roar_robust_gradient_beats_image_control(results=tmp_path).verdict == "not supported"
    _fake_roar_fills(tmp_path, base, rng.permutation(base))
    c = claims.claim_roar_robust_gradient_beats_image_control(results=tmp_path)
    assert c.verdict == "inconclusive" and c.detail["fill"] == "impute"
    # Three retraining seeds that agree on each digit support the effect; seeds that disagree as
    # much as the effect (one far above, one far below) make it inconclusive: the interval covers
    # the seeds, not only the digits.
    _fake_roar_fills(tmp_path, np.stack([base + 0.05] * 3), np.stack([base] * 3))
    assert claims.claim_roar_robust_gradient_beats_image_control(results=tmp_path).verdict == "supported"
    _fake_roar_fills(tmp_path, np.stack([base + 0.45, base + 0.05, base - 0.35]), np.stack([base] * 3))
    c = claims.claim_roar_robust_gradient_beats_image_control(results=tmp_path)
    assert c.effect == pytest.approx(0.05) and c.verdict == "inconclusive"
    with pytest.raises(ValueError, match="fill 'mean' has no per-repeat, per-digit KAR scores"):
        claims.claim_kar_robust_gradient_beats_image_control(fill="mean", results=tmp_path)
    with pytest.raises(FileNotFoundError, match="robustlab.experiments roar_fills"):
        claims.claim_roar_robust_gradient_beats_standard(results=tmp_path / "nothing")


def test_measure_all_remeasures_and_resumes_only_an_interrupted_run(tmp_path, monkeypatch):
    calls = []

    def fake(name, effect):
        def measure(**kwargs):
            calls.append(effect)
            if effect == "kill":
                raise KeyboardInterrupt
            return claims.make_claim(name, "A fake claim.", torch.full((10,), effect) + torch.arange(10) * 0.01, {})
        return measure

    monkeypatch.setattr(claims.registry, "CLAIMS", {"a": fake("a", 1.0), "b": fake("b", -1.0)})
    out = tmp_path / "claims.json"
    first = claims.measure_all(out=out)
    assert [c["verdict"] for c in first] == ["supported", "not supported"] and len(calls) == 2
    assert not claims.registry.partial_path(out).exists()
    # A finished file is never reused: a second run measures everything again.
    claims.measure_all(out=out)
    assert len(calls) == 4
    # Naming one claim remeasures it and keeps the other's stored record.
    monkeypatch.setitem(claims.registry.CLAIMS, "b", fake("b", 2.0))
    both = claims.measure_all(["b"], out=out)
    assert len(calls) == 5 and [c["verdict"] for c in both] == ["supported", "supported"]
    # Killed during the second claim: the rerun resumes from the partial file, not from scratch.
    monkeypatch.setitem(claims.registry.CLAIMS, "b", fake("b", "kill"))
    with pytest.raises(KeyboardInterrupt):
        claims.measure_all(out=out)
    assert [c["name"] for c in json.loads(claims.registry.partial_path(out).read_text())["claims"]] == ["a"]
    monkeypatch.setitem(claims.registry.CLAIMS, "b", fake("b", -1.0))
    claims.measure_all(out=out)
    assert calls[-2:] == ["kill", -1.0] and calls.count(1.0) == 3  # "a" was not measured again after the kill
    assert [c["verdict"] for c in json.loads(out.read_text())] == ["supported", "not supported"]
    with pytest.raises(ValueError, match="unknown claims"):
        claims.measure_all(["nope"])


def stored_claims():
    if not RESULTS.exists():
        pytest.fail("results/claims.json is missing: run make interpret-results")
    return {c["name"]: c for c in json.loads(RESULTS.read_text())}


def test_every_claim_is_measured_with_its_fields():
    stored = stored_claims()
    assert set(stored) == set(claims.CLAIMS), "results/claims.json is stale: run make interpret-results"
    for c in stored.values():
        assert c["verdict"] in claims.VERDICTS
        assert c["low"] <= c["effect"] <= c["high"]
        assert c["verdict"] == claims.verdict(c["low"], c["high"])
        assert c["statement"] and "torch" in c


def test_marker_check_flags_an_asserted_claim_that_did_not_hold():
    stored = {"robust_gradients_align_with_image": {"verdict": "not supported", "effect": -0.05, "low": -0.07,
                                                    "high": -0.03}}
    asserted = "Robust gradients align better. <!-- claim: robust_gradients_align_with_image -->"
    reported = "They do not align better here. <!-- claim-reported: robust_gradients_align_with_image -->"
    assert "not supported" in claims.marker_problems(asserted, stored)[0]
    assert claims.marker_problems(reported, stored) == []
    stored["robust_gradients_align_with_image"]["verdict"] = "supported"
    assert claims.marker_problems(asserted, stored) == []
    assert "unknown claim 'made_up'" in claims.marker_problems("<!-- claim: made_up -->", stored)[0]
    assert "not measured" in claims.marker_problems("<!-- claim: robust_maps_set_by_first_layer -->", stored)[0]
    # The spelling of a marker cannot dodge the check: spacing, case and lists are read ...
    stored["robust_gradients_align_with_image"]["verdict"] = "not supported"
    for variant in ("<!--claim:robust_gradients_align_with_image-->",
                    "<!-- CLAIM:  robust_gradients_align_with_image -->",
                    "<!-- claim: toy_2d_robust_gradients_follow_data, robust_gradients_align_with_image -->",
                    "<!--\n claim:\n robust_gradients_align_with_image\n-->"):
        assert any("not supported" in p for p in claims.marker_problems(variant, stored)), variant
    # ... and a comment that mentions a claim without being a marker is an error, not ignored.
    for broken in ("<!-- claims: robust_gradients_align_with_image -->",
                   "<!-- claim robust_gradients_align_with_image -->",
                   "<!-- claim: -->", "<!-- claim: Robust-Gradients -->", "<!-- claim-reportd: x -->"):
        assert any("malformed claim marker" in p for p in claims.marker_problems(broken, stored)), broken
    assert claims.marker_problems("<!-- a comment about something else -->", stored) == []


def test_pages_assert_only_supported_claims():
    stored = stored_claims()
    for page in sorted((ROOT / "book").glob("*.md")):
        assert claims.marker_problems(page.read_text(), stored) == [], page.name
    for name, c in stored.items():
        assert c["pages"] == claims.pages_stating(name), f"{name}: rerun make interpret-results"
