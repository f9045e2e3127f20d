"""The robustness–interpretability experiments: ROAR/KAR, alignment, transfer, toys, VAE."""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab import interpret as it
from robustlab import models
from robustlab.testing import LinearBinary, tiny_cnn


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- masking ------------------------------------------------------------------------------------

def test_mask_top_removes_or_keeps_exactly_the_top_pixels():
    x = torch.rand(2, 3, 4, 4, generator=gen(1))
    attr = torch.zeros_like(x)
    attr[0, 1, 0, 0], attr[0, 2, 3, 3], attr[0, 0, 2, 1] = 5.0, -4.0, 3.0  # ranks by |.| summed over C
    attr[1] = torch.arange(16.0).view(4, 4)  # pixel 15 first, then 14, 13
    fill = torch.tensor([0.1, 0.2, 0.3])
    roar = it.mask_top(x, attr, 3 / 16, fill=fill)
    removed = (roar != x).any(dim=1)  # (N, H, W)
    assert removed[0].nonzero().tolist() == [[0, 0], [2, 1], [3, 3]]
    assert removed[1].flatten().nonzero().flatten().tolist() == [13, 14, 15]
    torch.testing.assert_close(roar[0, :, 0, 0], fill)
    kar = it.mask_top(x, attr, 3 / 16, keep=True, fill=fill)
    kept = (kar == x).all(dim=1)
    assert torch.equal(kept, removed)
    assert torch.equal(it.mask_top(x, attr, 0.0), x) and bool((it.mask_top(x, attr, 1.0) == 0).all())


def test_mask_top_is_deterministic_on_ties_and_leaves_x_alone():
    x = torch.rand(1, 1, 5, 5, generator=gen(2))
    x_copy = x.clone()
    a = it.mask_top(x, torch.ones_like(x), 0.2)
    assert torch.equal(a, it.mask_top(x, torch.ones_like(x), 0.2))
    assert int((a != x).sum()) == 5 and torch.equal(x, x_copy)


def synthetic_patch_data(n, seed, size=12):
    """Class = whether a fixed 2x2 patch is bright; everything else is noise."""
    g = gen(seed)
    x = 0.5 * torch.rand(n, 1, size, size, generator=g)
    y = torch.arange(n) % 2
    x[:, :, 5:7, 5:7] = y.view(-1, 1, 1, 1).float() * 0.5 + 0.5 * torch.rand(n, 1, 2, 2, generator=g)
    informative = torch.zeros(1, 1, size, size)
    informative[:, :, 5:7, 5:7] = 1.0
    return x, y, informative.expand_as(x).clone()


def test_roar_ranks_a_perfect_attribution_above_random():
    x_tr, y_tr, perfect_tr = synthetic_patch_data(1200, 3)
    x_te, y_te, perfect_te = synthetic_patch_data(400, 4)
    net = lambda: tiny_cnn(num_classes=2, size=12, dropout=0.0, seed=int(torch.randint(0, 1000, ())))
    res = it.roar_kar((x_tr, y_tr), (x_te, y_te), {"perfect": (perfect_tr, perfect_te)}, fractions=(0.05, 0.3),
                      repeats=1, epochs=3, arch=net, batch_size=50, progress=False)
    assert float(res.unmasked[0]) > 0.95
    # Removing the patch (4 pixels < 5 % of 144) destroys the signal; random removal does not.
    assert float(res.roar["perfect"][0, 0]) < 0.65 and float(res.roar["random"][0, 0]) > 0.9
    # Keeping only the top 5 % keeps the patch; keeping 5 % random pixels keeps less than 1 of it.
    assert float(res.kar["perfect"][0, 0]) > 0.9 and float(res.kar["random"][0, 0]) < 0.8
    scores = it.roar_kar_scores(res)
    assert scores["perfect"]["roar"] > 0.05 and scores["perfect"]["kar"] > 0.0


def test_scores_by_hand():
    res = it.RoarKarResult(
        fractions=(0.0, 0.5, 1.0),
        roar={"a": torch.tensor([[0.9, 0.5, 0.1]]), "random": torch.tensor([[0.9, 0.7, 0.3]])},
        kar={"a": torch.tensor([[0.4, 0.8, 0.9]]), "random": torch.tensor([[0.2, 0.6, 0.9]])},
        unmasked=torch.tensor([0.99]), epochs=1)
    s = it.roar_kar_scores(res)
    # trapezoid of (0, 0.2, 0.2) over (0, .5, 1) = 0.05 + 0.1; of (0.2, 0.2, 0) = 0.1 + 0.05
    assert s == {"a": {"roar": pytest.approx(0.15), "kar": pytest.approx(0.15)}}
    with pytest.raises(ValueError, match="include_random=True"):
        it.roar_kar_scores(res._replace(roar={"a": res.roar["a"]}))


# --- alignment ----------------------------------------------------------------------------------

def test_alignment_of_the_image_itself_is_one_and_of_noise_near_zero():
    x = torch.rand(4, 1, 28, 28, generator=gen(5))
    torch.testing.assert_close(it.alignment(x, x), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(it.alignment(-3 * x, x), torch.ones(4, dtype=torch.float64))  # |attr|
    noise = torch.randn(4, 1, 28, 28, generator=gen(6))
    assert float(it.alignment(noise, x).abs().max()) < 0.15
    assert torch.equal(it.alignment(torch.ones_like(x), x), torch.zeros(4, dtype=torch.float64))
    # |1 - x| = 1 - x on [0, 1]: a map bright exactly where the image is dark.
    torch.testing.assert_close(it.alignment(1 - x, x), -torch.ones(4, dtype=torch.float64))


def test_alignment_is_pearson_of_abs_map_summed_over_channels_with_mean_image():
    x = torch.rand(3, 3, 7, 7, generator=gen(14))
    attr = 0.5 * torch.randn(3, 3, 7, 7, generator=gen(15)) + 2 * x  # correlated, but not perfectly
    a = attr.abs().sum(dim=1).flatten(1).double().numpy()
    b = x.mean(dim=1).flatten(1).double().numpy()
    expected = torch.tensor([np.corrcoef(a[i], b[i])[0, 1] for i in range(3)], dtype=torch.float64)
    assert 0.2 < float(expected.min()) and float(expected.max()) < 0.95  # neither 0 nor 1
    torch.testing.assert_close(it.alignment(attr, x), expected)


def test_mass_near_digit_by_hand():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0  # one ink pixel; radius 1 -> the 3 x 3 block around it
    attr = torch.zeros_like(x)
    attr[0, 0, 4, 4], attr[0, 0, 3, 5], attr[0, 0, 0, 0] = 2.0, -1.0, 1.0
    assert float(it.mass_near_digit(attr, x, radius=1)[0]) == pytest.approx(3 / 4)
    assert float(it.mass_near_digit(attr, x, radius=0)[0]) == pytest.approx(2 / 4)
    assert float(it.mass_near_digit(torch.zeros_like(x), x)[0]) == 0.0


# --- transfer -----------------------------------------------------------------------------------

def test_transfer_matrix_diagonal_is_white_box_accuracy():
    x = torch.rand(40, 1, 6, 6, generator=gen(7))
    a, b = tiny_cnn(num_classes=3, size=6, seed=1).eval(), tiny_cnn(num_classes=3, size=6, seed=2).eval()
    y = a(x).argmax(1).detach()
    attack = functools.partial(rl.fgsm, eps=0.2)
    m = it.transfer_matrix({"a": a, "b": b}, x, y, attack=attack, batch_size=15)
    assert m.shape == (2, 2)
    for i, model in enumerate((a, b)):
        white = float((model(attack(model, x, y)).argmax(1) == y).float().mean())
        assert float(m[i, i]) == pytest.approx(white)
    assert float(m[0, 1]) == pytest.approx(float((b(attack(a, x, y)).argmax(1) == y).float().mean()))


# --- toys ---------------------------------------------------------------------------------------

def test_toy_2d_data_is_balanced_in_range_and_image_shaped():
    x, y = it.toy_2d_data(400, generator=gen(8))
    assert x.shape == (400, 1, 1, 2) and bool((x >= 0).all() and (x <= 1).all())
    assert torch.bincount(y).tolist() == [200, 200]
    # Class 0 lies on the main diagonal's corners: x0 and x1 are on the same side of 0.5.
    same_side = ((x[:, 0, 0, 0] > 0.5) == (x[:, 0, 0, 1] > 0.5))
    assert float(same_side[y == 0].float().mean()) > 0.95 and float(same_side[y == 1].float().mean()) < 0.05
    assert isinstance(it.toy_mlp()(x), torch.Tensor) and it.toy_mlp()(x).shape == (400, 2)


def test_kim_2d_data_lies_along_a_line_and_robust_gradients_follow_it():
    x, y = it.kim_2d_data(400, generator=gen(0))
    assert x.shape == (400, 1, 1, 2) and int(y.sum()) == 200
    p = x.view(-1, 2)
    assert float(p[:, 1].std()) < 0.01 and float(p[:, 0].std()) > 0.2  # a line across the plane
    assert float(p[y == 0, 0].max()) < float(p[y == 1, 0].min())  # class 0 left, class 1 right
    from robustlab.train import TrainConfig, fit

    cos = {}
    for name, fields in (("standard", dict(method="standard")), ("pgd", dict(method="pgd", norm="l2", eps=0.1,
                                                                             steps=10))):
        model = it.toy_mlp(seed=0)
        fit(model, (x, y), TrainConfig(epochs=20, batch_size=50, lr=1e-2, seed=0, **fields), progress=False)
        cos[name] = float(it.gradient_alignment_2d(model, x, y).mean())
    assert cos["pgd"] > 0.97 and cos["pgd"] > cos["standard"]
    with pytest.raises(ValueError, match="centres must be two"):
        it.kim_2d_data(10, centres=((0.1, 0.2),))


def test_plot_toy_2d_draws_regions_data_and_arrows():
    import matplotlib
    matplotlib.use("Agg")
    x, y = it.toy_2d_data(100, generator=gen(13))
    ax = it.plot_toy_2d(it.toy_mlp(), x, y, grid=20, arrows=10, title="t")
    assert len(ax.images) == 1 and len(ax.collections) >= 3 and ax.get_title() == "t"
    quiver = [c for c in ax.collections if type(c).__name__ == "Quiver"][0]
    assert quiver.N == 10


def test_gradient_alignment_2d_by_hand():
    # Class 0 at x0 = 0.2, class 1 at x0 = 0.8, same x1: the other class is straight to the side.
    x = torch.tensor([[0.2, 0.3], [0.8, 0.3], [0.2, 0.6], [0.8, 0.6]]).view(4, 1, 1, 2)
    y = torch.tensor([0, 1, 0, 1])
    along = LinearBinary(torch.tensor([[[1.0, 0.0]]]), b=-0.5)
    across = LinearBinary(torch.tensor([[[0.0, 1.0]]]), b=-0.5)
    torch.testing.assert_close(it.gradient_alignment_2d(along, x, y), torch.ones(4))
    torch.testing.assert_close(it.gradient_alignment_2d(across, x, y), torch.zeros(4), atol=1e-6, rtol=0)


def test_tsipras_analytic_accuracies_match_simulation():
    d, p = 400, 0.9
    acc = it.tsipras_accuracies(d=d, p=p)
    x, y = it.tsipras_data(40_000, d=d, p=p, generator=gen(9))
    eta, eps = 2 / math.sqrt(d), acc["eps"]
    assert eps == pytest.approx(2 * eta)
    standard = lambda z: torch.sign(z[:, 1:].mean(1))
    x_adv = x.clone()
    x_adv[:, 1:] -= eps * y[:, None]  # the worst Linf shift of the weak features
    x_adv[:, 0] -= eps * y  # cannot flip the robust feature (eps < 1)
    sim = {"standard_clean": standard(x), "standard_robust": standard(x_adv),
           "robust_clean": torch.sign(x[:, 0]), "robust_robust": torch.sign(x_adv[:, 0])}
    for key, pred in sim.items():
        assert float((pred == y).double().mean()) == pytest.approx(acc[key], abs=0.01), key
    assert acc["standard_clean"] > acc["robust_clean"] and acc["standard_robust"] < 0.05


# --- generation ---------------------------------------------------------------------------------

def test_targeted_generation_reaches_the_target_and_is_judged():
    model = tiny_cnn(num_classes=3, size=6, seed=3).eval()
    x = torch.rand(12, 1, 6, 6, generator=gen(10))
    target = (model(x).argmax(1) + 1).remainder(3).detach()
    # A judge that always says class 0 agrees exactly on the examples whose target is 0.
    always_zero = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    with torch.no_grad():
        always_zero[1].weight.zero_()
        always_zero[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    res = it.targeted_generation(model, always_zero, x, target, eps=3.0, steps=50)
    share_zero = float((target == 0).float().mean())
    assert 0 < share_zero < 1 and res.judge_agreement == pytest.approx(share_zero)
    with torch.no_grad():
        reached = model(res.x_gen).argmax(1) == target
    assert res.source_success == 1.0 and bool(reached.all()) and torch.equal(res.target, target)
    assert float((res.x_gen - x).flatten(1).norm(dim=1).max()) <= 3.0 + 1e-4
    other = tiny_cnn(num_classes=3, size=6, seed=4).eval()
    res2 = it.targeted_generation(model, other, x, target, eps=3.0, steps=50)
    expected = float((other(res2.x_gen).argmax(1) == target).float().mean())
    assert res2.judge_agreement == pytest.approx(expected)


def test_generation_optimisers_and_the_ensemble_judge():
    model = tiny_cnn(num_classes=3, size=6, seed=3).eval()
    x = torch.rand(10, 1, 6, 6, generator=gen(11))
    target = (model(x).argmax(1) + 1).remainder(3).detach()
    judge = tiny_cnn(num_classes=3, size=6, seed=9).eval()
    for optimiser, kw in (("pgd", {}), ("apgd", dict(restarts=2, generator=gen(0)))):
        res = it.targeted_generation(model, judge, x, target, eps=3.0, steps=40, optimiser=optimiser, **kw)
        assert res.source_success == 1.0 and bool(res.reached.all())
        with torch.no_grad():
            assert torch.equal(res.judged, judge(res.x_gen).argmax(1) == target)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        it.targeted_generation(model, judge, x, target, eps=1.0, optimiser="pgd", steps=0)
    # The ensemble judge is the log of the members' mean softmax.
    a, b = tiny_cnn(num_classes=3, size=6, seed=5).eval(), tiny_cnn(num_classes=3, size=6, seed=6).eval()
    ens = it.Ensemble([a, b])
    with torch.no_grad():
        torch.testing.assert_close(ens(x).exp(), (a(x).softmax(1) + b(x).softmax(1)) / 2)
    with pytest.raises(ValueError, match="at least one member"):
        it.Ensemble([])
    with pytest.raises(ValueError, match="unknown optimiser 'adam'"):
        it.targeted_generation(model, model, x, target, eps=1.0, optimiser="adam")
    with pytest.raises(ValueError, match="restarts applies to optimiser='apgd' only"):
        it.targeted_generation(model, model, x, target, eps=1.0, optimiser="pgd", restarts=2)
    with pytest.raises(ValueError, match="alpha is PGD's step size"):
        it.targeted_generation(model, model, x, target, eps=1.0, alpha=0.1)


# --- VAE and manifold distance ------------------------------------------------------------------

def test_vae_learns_and_projection_is_closer_for_data_than_for_noise():
    x, _, _ = synthetic_patch_data(600, 11)
    vae, hist = it.train_vae(x, latent=4, hidden=64, epochs=15, batch_size=64, lr=3e-3, progress=False)
    assert hist[-1]["neg_elbo"] < 0.9 * hist[0]["neg_elbo"]
    assert not vae.training
    proj = it.project(vae, x[:50])
    assert proj.shape == (50, 1, 12, 12) and bool((proj >= 0).all() and (proj <= 1).all())
    d_data = it.manifold_distance(vae, x[:50])
    noise = torch.rand(50, 1, 12, 12, generator=gen(12))
    assert float(d_data.mean()) < float(it.manifold_distance(vae, noise).mean())
    refined = it.manifold_distance(vae, noise, refine_steps=30)
    assert float(refined.mean()) < float(it.manifold_distance(vae, noise).mean())


def test_vae_architecture_maps_images_to_images():
    vae = models.create("vae", latent=3, hidden=16, size=8)
    x = torch.rand(5, 1, 8, 8)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 3) and vae(x).shape == x.shape


# --- bad input ----------------------------------------------------------------------------------

def test_bad_input_is_rejected():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"attr must be an attribution of x's shape \(2, 1, 4, 4\)"):
        it.mask_top(x, torch.rand(2, 1, 3, 3), 0.5)
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\], got 1.5"):
        it.mask_top(x, x, 1.5)
    with pytest.raises(ValueError, match=r"fill must be a number or have one value per channel \(1\)"):
        it.mask_top(x, x, 0.5, fill=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"p must lie in \[0.5, 1\]"):
        it.tsipras_data(10, d=5, p=1.5)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\], got 1.5"):
        it.roar_kar((x, y), (x, y), {}, fractions=(0.5, 1.5), progress=False)
    with pytest.raises(ValueError, match="unknown fill 'median'; valid values are 'mean', 'zero', 'blur', 'impute'"):
        it.roar_kar((x, y), (x, y), {}, fill="median", progress=False)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        it.roar_kar((x, torch.zeros(2, dtype=torch.long)), (x, torch.zeros(2, dtype=torch.long)), {}, repeats=0)
