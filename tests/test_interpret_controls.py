"""Attribution controls, removal fills, ROAD and the randomisation sanity check, on data and models
whose answers are known."""

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import interpret as it
from robustlab import saliency
from robustlab.testing import tiny_cnn
from robustlab.train import TrainConfig, fit

from .conftest import require_peer


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- controls -----------------------------------------------------------------------------------

def test_image_and_edge_controls_by_hand():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, :, 2:] = 1.0  # a vertical edge between columns 1 and 2
    assert torch.equal(it.image_attribution(x), x)
    e = it.edge_attribution(x)[0, 0]
    # Sobel d/dx at columns 1 and 2 is 1 + 2 + 1 = 4 (replicated borders keep rows uniform); 0 elsewhere.
    torch.testing.assert_close(e[:, 1], torch.full((5,), 4.0))
    torch.testing.assert_close(e[:, 2], torch.full((5,), 4.0))
    assert float(e[:, [0, 3, 4]].abs().max()) == 0.0
    assert float(it.edge_attribution(torch.full((2, 3, 4, 4), 0.3)).abs().max()) < 1e-6  # flat: no edges
    r1 = it.control_attribution("random", x, generator=gen(1))
    assert torch.equal(r1, it.random_attribution(x, generator=gen(1)))
    with pytest.raises(ValueError, match="unknown control 'sobel'"):
        it.control_attribution("sobel", x)


# --- fills --------------------------------------------------------------------------------------

def bar_image():
    """A bright 2-pixel-wide vertical bar on black: the 'ink' that a map following the image ranks first."""
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, 2:8, 4:6] = 1.0
    return x


def test_mean_and_zero_fills_show_the_silhouette_and_imputation_hides_it():
    x = bar_image()
    removed = it.image_attribution(x) > 0.5  # remove exactly the bar
    mean = torch.tensor([0.2])
    grey = it.fill_removed(x, removed, "mean", mean=mean)
    # The mean fill paints the bar's shape in grey on black: the removed pixels are readable.
    assert torch.equal(grey == 0.2, removed)
    blurred = it.fill_removed(x, removed, "blur")
    assert float(blurred[removed].min()) > 0.2  # a low-pass copy of the bar is still there
    imputed = it.fill_removed(x, removed, "impute", noise=0.0)
    # Imputed from black neighbours: the bar is gone and nothing marks where it was.
    assert float(imputed.abs().max()) < 1e-4
    zero = it.fill_removed(x, removed, "zero")
    assert float(zero.abs().max()) == 0.0
    assert torch.equal(it.fill_removed(x, removed, 0.5)[removed], torch.full((12,), 0.5))
    assert torch.equal(x, bar_image())  # not changed


def test_fill_removed_rejects_bad_fills():
    x, removed = bar_image(), torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="fill"):
        it.fill_removed(x, removed, "median")
    with pytest.raises(ValueError, match="mean="):
        it.fill_removed(x, removed, "mean")
    with pytest.raises(ValueError, match="fill"):
        it.fill_removed(x, removed, [0.1])


# --- ROAD's imputation --------------------------------------------------------------------------

def test_imputation_equals_the_closed_form_on_tiny_images():
    x = torch.tensor([[[[0.1, 0.2, 0.3], [0.4, 0.9, 0.6], [0.7, 0.8, 0.5]]]])
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    out = it.noisy_linear_impute(x, centre, noise=0.0)
    # Direct neighbours weigh 1/6, diagonal ones 1/12 (they sum to 1).
    expected = (0.2 + 0.4 + 0.6 + 0.8) / 6 + (0.1 + 0.3 + 0.7 + 0.5) / 12
    assert out[0, 0, 1, 1].item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(out[~centre.unsqueeze(1)], x[~centre.unsqueeze(1)])  # kept pixels untouched
    # Two adjacent unknowns in a row a ? ? d: 2u1 = a + u2 and 2u2 = u1 + d.
    row = torch.tensor([[[[0.2, 0.9, 0.9, 0.8]]]])
    mid = torch.tensor([[[False, True, True, False]]])
    u = it.noisy_linear_impute(row, mid, noise=0.0)[0, 0, 0]
    torch.testing.assert_close(u[1:3], torch.tensor([(2 * 0.2 + 0.8) / 3, (0.2 + 2 * 0.8) / 3]), atol=1e-5, rtol=0)
    # Nothing kept: the region has no anchor and takes 0.
    assert float(it.noisy_linear_impute(row, torch.ones(1, 1, 4, dtype=torch.bool), noise=0.0).abs().max()) < 1e-6


def test_imputation_is_batched_per_channel_seeded_and_clipped():
    x = torch.rand(3, 2, 6, 6, generator=gen(2))
    removed = torch.rand(3, 1, 6, 6, generator=gen(3)) < 0.3
    one_by_one = torch.cat([it.noisy_linear_impute(x[i:i + 1, c:c + 1], removed[i:i + 1], noise=0.0)
                            for i in range(3) for c in range(2)]).view(3, 2, 6, 6)
    torch.testing.assert_close(it.noisy_linear_impute(x, removed, noise=0.0), one_by_one)
    a = it.noisy_linear_impute(x, removed, noise=0.5, generator=gen(4))
    b = it.noisy_linear_impute(x, removed, noise=0.5, generator=gen(4))
    assert torch.equal(a, b) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, it.noisy_linear_impute(x, removed, noise=0.0))


def test_imputation_agrees_with_quantus():
    perturb = require_peer("quantus.functions.perturb_func")
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.random((1, 3, 8, 8)), dtype=torch.float64)
    removed = torch.as_tensor(rng.random((1, 8, 8)) < 0.4)
    removed[0, 0, 0] = False  # at least one kept pixel
    ours = it.noisy_linear_impute(x, removed, noise=0.0)[0].numpy()
    theirs = perturb.noisy_linear_imputation(x[0].numpy(), indices=np.flatnonzero(removed[0].numpy()), noise=0.0)
    np.testing.assert_allclose(ours, np.clip(theirs, 0.0, 1.0), atol=1e-5)


def test_imputation_rejects_bad_masks():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"removed must be a bool tensor of shape \(2, 4, 4\)"):
        it.noisy_linear_impute(x, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="noise"):
        it.noisy_linear_impute(x, torch.zeros(2, 4, 4, dtype=torch.bool), noise=-1.0)


# --- ROAD on data whose informative pixels are known --------------------------------------------

def patch_data(n, seed, size=12):
    """The class is the brightness of a fixed 2x2 patch (0.35 or 0.65, +-0.05); every other pixel
    is uniform noise in [0, 1], so the patch is *not* the brightest part of the image and a
    ranking by brightness (the image control) misses it."""
    g = gen(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    y = torch.arange(n) % 2
    x[:, :, 5:7, 5:7] = 0.35 + 0.3 * y.view(-1, 1, 1, 1).float() + 0.1 * (torch.rand(n, 1, 2, 2, generator=g) - 0.5)
    informative = torch.zeros(n, 1, size, size)
    informative[:, :, 5:7, 5:7] = 1.0
    return x, y, informative


@pytest.fixture(scope="module")
def patch_model():
    x, y, _ = patch_data(1500, 5)
    model = tiny_cnn(num_classes=2, size=12, dropout=0.0, seed=3)
    fit(model, (x, y), TrainConfig(method="standard", epochs=6, batch_size=50, seed=0), progress=False)
    return model.eval()


def test_road_ranks_the_faithful_map_above_the_controls(patch_model):
    x, y, informative = patch_data(400, 6)
    maps = {"faithful": informative, "image": it.image_attribution(x), "edge": it.edge_attribution(x),
            "random": it.random_attribution(x, generator=gen(7))}
    res = it.road(patch_model, x, y, maps, fractions=(0.03, 0.5), repeats=2)
    assert res.clean > 0.95
    # Removing the 4 patch pixels (3 % of 144) and imputing them from noise destroys the signal.
    assert float(res.morf["faithful"][:, 0].mean()) < 0.7
    for control in ("image", "edge", "random"):
        assert float(res.morf[control][:, 0].mean()) > 0.85, control
    # Removing the least relevant half keeps the patch, and the accuracy.
    assert float(res.lerf["faithful"][:, 1].mean()) > 0.9
    scores = it.road_scores(res)
    assert scores["faithful"]["gap"] > max(scores[c]["gap"] for c in ("image", "edge", "random")) + 0.2
    assert res.morf["faithful"].shape == (2, 2) and res.morf_correct["faithful"].shape == (2, 2, 400)
    # Per image: the gaps average to the score, and the faithful map wins on most images.
    gaps = it.road_gap_per_image(res)
    for name, gap in gaps.items():
        assert gap.shape == (400,) and float(gap.mean()) == pytest.approx(scores[name]["gap"])
    assert float((gaps["faithful"] > gaps["image"]).double().mean()) > 0.5
    # Per draw of the imputation noise: one row per draw, averaging to the default.
    per_draw = it.road_gap_per_image(res, per_draw=True)
    for name, gap in per_draw.items():
        assert gap.shape == (2, 400) and torch.allclose(gap.mean(0), gaps[name])
    with pytest.raises(ValueError, match="both orders"):
        it.road_gap_per_image(it.road(patch_model, x[:8], y[:8], {"image": x[:8]}, orders=("morf",)))


def test_road_scores_by_hand_and_bad_input():
    res = it.RoadResult(fractions=(0.0, 0.5, 1.0), morf={"a": torch.tensor([[1.0, 0.5, 0.0]])},
                        lerf={"a": torch.tensor([[1.0, 1.0, 0.5]])}, clean=1.0, noise=0.0)
    s = it.road_scores(res)["a"]
    assert s["morf"] == pytest.approx(0.5) and s["lerf"] == pytest.approx(0.875) and s["gap"] == pytest.approx(0.375)
    x, y = torch.rand(4, 1, 6, 6), torch.zeros(4, dtype=torch.int64)
    model = tiny_cnn(num_classes=2, size=6)
    with pytest.raises(ValueError, match="order"):
        it.road(model, x, y, {"a": x}, orders=("morf", "both"))
    with pytest.raises(ValueError, match="fractions must lie in"):
        it.road(model, x, y, {"a": x}, fractions=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"attributions\['a'\]"):
        it.road(model, x, y, {"a": x[:2]})


def test_roar_with_imputation_is_road_with_retraining():
    x_tr, y_tr, inf_tr = patch_data(1000, 8)
    x_te, y_te, inf_te = patch_data(300, 9)
    net = lambda: tiny_cnn(num_classes=2, size=12, dropout=0.0, seed=int(torch.randint(0, 1000, ())))
    res = it.roar_kar((x_tr, y_tr), (x_te, y_te), {"faithful": (inf_tr, inf_te)}, fractions=(0.03,),
                      epochs=3, arch=net, batch_size=50, fill="impute", kar=False, progress=False)
    assert float(res.unmasked[0]) > 0.9
    assert float(res.roar["faithful"][0, 0]) < 0.7 < float(res.roar["random"][0, 0])
    with pytest.raises(ValueError, match="fill"):
        it.roar_kar((x_tr, y_tr), (x_te, y_te), {}, fill="median", progress=False)


# --- the model parameter randomisation test ------------------------------------------------------

def test_randomisation_test_on_a_linear_model_whose_maps_are_known():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).eval()
    trained = model[1].weight.detach().clone()
    x = torch.rand(5, 1, 6, 6, generator=gen(10))
    target = torch.tensor([0, 1, 2, 0, 1])
    grad = lambda m, xb, t: saliency.gradient(m, xb, t)
    res = it.randomization_test(model, x, target, grad, mode="cascading", generator=gen(11))
    assert res.layers == ["1"]
    # The gradient of a linear model for class t is its weight row W[t]: after randomisation, the
    # new row, which the same generator reproduces.
    fresh = it.randomize_layers(model, ["1"], generator=gen(11))
    new_rows = fresh[1].weight.detach()[target].view(5, 1, 6, 6)
    old_rows = model[1].weight.detach()[target].view(5, 1, 6, 6)
    torch.testing.assert_close(res.spearman[0], it.rank_correlation(old_rows, new_rows, absolute=False))
    assert float(res.spearman_abs[0].abs().max()) < 0.6  # unrelated random rows
    assert torch.equal(model[1].weight, trained) and not torch.equal(fresh[1].weight, trained)  # a copy changed


def test_randomisation_separates_a_model_map_from_a_model_free_control():
    model = tiny_cnn(num_classes=3, size=8, dropout=0.0, seed=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 8, 8, generator=gen(12))
    target = torch.zeros(6, dtype=torch.int64)
    edge = lambda m, xb, t: it.edge_attribution(xb)  # ignores the model
    grad = lambda m, xb, t: saliency.gradient(m, xb, t)
    for mode in it.sanity.MODES:
        ctrl = it.randomization_test(model, x, target, edge, mode=mode)
        torch.testing.assert_close(ctrl.spearman_abs, torch.ones_like(ctrl.spearman_abs))  # cannot tell them apart
        res = it.randomization_test(model, x, target, grad, mode=mode)
        assert res.layers == it.sanity.randomizable_layers(model)
        assert res.spearman_abs.shape == (len(res.layers), 6)
        assert float(res.spearman_abs[-1].mean()) < 0.9
    # Cascading ends with every layer random: its last maps are far from the trained model's.
    assert float(it.randomization_test(model, x, target, grad).spearman_abs[-1].mean()) < 0.6
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model untouched


def test_cascading_accumulates_random_layers_and_independent_randomises_one():
    model = tiny_cnn(num_classes=3, size=8, dropout=0.0, seed=2).eval()
    with torch.no_grad():  # move the batch norm off its reset values, so its randomisation shows
        for param in model.parameters():
            param.add_(0.1)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    layers = it.sanity.randomizable_layers(model)
    x, target = torch.rand(2, 1, 8, 8, generator=gen(14)), torch.zeros(2, dtype=torch.int64)
    for mode in it.sanity.MODES:
        seen = []

        def record(m, xb, t):
            if m is not model:  # the first call maps the trained model itself
                state = m.state_dict()
                seen.append({name for name in layers if not torch.equal(state[f"{name}.weight"],
                                                                        trained[f"{name}.weight"])})
            return saliency.gradient(m, xb, t)

        it.randomization_test(model, x, target, record, mode=mode)
        if mode == "cascading":
            assert seen == [set(layers[:k + 1]) for k in range(len(layers))]
        else:
            assert seen == [{name} for name in layers]


def test_imputation_noise_does_not_depend_on_the_batch_and_fill_checks_its_mask():
    x = torch.rand(3, 3, 6, 6, generator=gen(15))
    removed = torch.rand(3, 6, 6, generator=gen(16)) < 0.4
    whole = it.noisy_linear_impute(x, removed, noise=0.1, generator=gen(17))
    again = it.noisy_linear_impute(x.clone(), removed.clone(), noise=0.1, generator=gen(17))
    assert torch.equal(whole, again)
    noise_free = it.noisy_linear_impute(x, removed, noise=0.0)
    draw = 0.1 * torch.randn(x.shape, generator=gen(17))
    expected = torch.where(removed.unsqueeze(1), (noise_free + draw).clamp(0, 1), x)
    torch.testing.assert_close(whole, expected)
    # An (N, H, W) mask with N = C is one mask per image, never one per channel.
    zeroed = it.fill_removed(x, removed, "zero")
    assert torch.equal(zeroed == 0, removed.unsqueeze(1).expand_as(x) | (x == 0))
    with pytest.raises(ValueError, match=r"removed must be a bool tensor of shape \(3, 6, 6\)"):
        it.fill_removed(x, removed.float(), "zero")
    with pytest.raises(ValueError, match=r"mean must hold one value per channel \(3\)"):
        it.fill_removed(x, removed, "mean", mean=torch.tensor([0.1, 0.2]))
    tiny = torch.rand(2, 1, 4, 4, generator=gen(18))
    blurred = it.fill_removed(tiny, torch.ones(2, 4, 4, dtype=torch.bool), "blur")  # kernel clipped to 3x3
    assert blurred.shape == tiny.shape and float(blurred.std()) < float(tiny.std())
    with pytest.raises(ValueError, match="increasing fractions"):
        it.road_scores(it.RoadResult((0.5, 0.1), {"a": torch.ones(1, 2)}, {}, 1.0, 0.0))


def test_rank_correlation_by_hand_and_bad_input():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    assert float(it.rank_correlation(a, a * 10)[0]) == pytest.approx(1.0)
    assert float(it.rank_correlation(a, -a, absolute=False)[0]) == pytest.approx(-1.0)
    assert float(it.rank_correlation(a, torch.ones_like(a))[0]) == 0.0  # constant map
    with pytest.raises(ValueError, match="one shape"):
        it.rank_correlation(a, a.view(1, 1, 4, 1))
    with pytest.raises(ValueError, match="mode"):
        it.randomization_test(tiny_cnn(size=8), torch.rand(1, 1, 8, 8), torch.zeros(1, dtype=torch.int64),
                              lambda m, x, t: x, mode="top-down")
    with pytest.raises(ValueError, match="no nn.Linear"):
        it.randomization_test(nn.Sequential(nn.Flatten()), torch.rand(1, 1, 2, 2), torch.zeros(1, dtype=torch.int64),
                              lambda m, x, t: x)
    with pytest.raises(ValueError, match="is not a module"):
        it.randomize_layers(tiny_cnn(size=8), ["fc9"])


# --- Etmann et al.'s alignment -------------------------------------------------------------------

def test_etmann_alignment_by_hand():
    x = torch.rand(3, 1, 4, 4, generator=gen(13))
    torch.testing.assert_close(it.etmann_alignment(-2 * x, x), torch.ones(3, dtype=torch.float64))
    g = torch.zeros_like(x)
    g[:, 0, 0, 0] = 1.0
    expected = x[:, 0, 0, 0].double() / x.flatten(1).double().norm(dim=1)
    torch.testing.assert_close(it.etmann_alignment(g, x), expected)
    assert float(it.etmann_alignment(torch.zeros_like(x), x).abs().max()) == 0.0
