"""Models: Normalize inside, architectures by hand-counted parameters and output shapes."""

import pytest
import torch

from robustlab import models


def test_normalize_standardises_per_channel_and_moves_with_the_model():
    layer = models.Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.rand(2, 3, 4, 4)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25, x[:, 2] / 2.0], 1)
    torch.testing.assert_close(layer(x), expected)
    assert set(layer.state_dict()) == {"mean", "std"}
    assert layer.double().mean.dtype == torch.float64
    assert list(layer.parameters()) == []


@pytest.mark.parametrize("mean,std,match", [((0.1,), (0.0,), "std must be positive"),
                                            ((0.1, 0.2), (0.3,), "one value per channel")])
def test_normalize_rejects_bad_statistics(mean, std, match):
    with pytest.raises(ValueError, match=match):
        models.Normalize(mean, std)


# Parameter counts derived by hand from the papers' layer lists:
# Madry: conv 1->32 5x5 (832) + conv 32->64 5x5 (51,264) + fc 3136->1024 (3,212,288) + fc 1024->10 (10,250)
# Wong small: conv 1->16 4x4 (272) + conv 16->32 4x4 (8,224) + fc 1568->100 (156,900) + fc 100->10 (1,010)
# PreAct ResNet-18 (Wong et al.'s, with the final BN-ReLU): conv 3->64 (1,728); stage 1 2x73,984;
# stage 2 229,760 + 295,424; stage 3 918,272 + 1,180,672; stage 4 3,671,552 + 4,720,640
# (each block: two BN affine pairs, two 3x3 convs, a 1x1 projection where the shape changes);
# final BN(512) 1,024; fc 512->10 5,130: 11,172,170.
# Wide: conv 1->32 4x4 (544) + conv 32->64 4x4 (32,832) + fc 3136->512 (1,606,144) + fc 512->10 (5,130).
# MLP: 784->512 (401,920) + 512->512 (262,656) + 512->10 (5,130) = 669,706.
@pytest.mark.parametrize("name,shape,params", [("madry-cnn", (1, 28, 28), 3_274_634),
                                               ("small-cnn", (1, 28, 28), 166_406),
                                               ("wide-cnn", (1, 28, 28), 1_644_650),
                                               ("mlp", (1, 28, 28), 669_706),
                                               ("preact-resnet18", (3, 32, 32), 11_172_170)])
def test_architectures(name, shape, params):
    torch.manual_seed(0)
    model = models.create(name).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    first = next(iter(model.children()))
    assert isinstance(first, models.Normalize)
    with torch.no_grad():
        out = model(torch.rand(3, *shape))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


def test_normalisation_is_part_of_the_model():
    torch.manual_seed(0)
    model = models.SmallCNN().eval()
    x = torch.rand(2, 1, 28, 28)
    body = torch.nn.Sequential(*list(model.children())[1:])
    torch.testing.assert_close(model(x), body((x - 0.1307) / 0.3081))


def test_create_rejects_unknown_names():
    with pytest.raises(ValueError, match="'madry-cnn', 'small-cnn', 'wide-cnn', 'mlp', 'preact-resnet18', 'vae'"):
        models.create("vgg16")
    with pytest.raises(ValueError, match="unknown dataset"):
        models.Normalize.for_dataset("imagenet")


# --- VAE-GAN (Larsen et al. 2016) ---------------------------------------------------------------

def _blobs(n: int = 400, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Grey square images of one bright blob each, at random places: data with a low-dimensional
    structure that a small VAE can learn."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randint(2, size - 2, (n, 2), generator=g)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    d2 = (rows[None] - centre[:, 0, None, None]) ** 2 + (cols[None] - centre[:, 1, None, None]) ** 2
    return torch.exp(-d2.float() / 2.0)[:, None]


def test_vaegan_learns_and_returns_a_vae():
    from robustlab import interpret

    x = _blobs()
    vae, hist = models.train_vaegan(x, latent=3, hidden=32, epochs=8, batch_size=50, lr=3e-3, disc_lr=1e-3,
                                    progress=False)
    assert type(vae) is models.VAE and not vae.training
    assert hist[-1]["neg_elbo"] < 0.9 * hist[0]["neg_elbo"]
    assert all(0.0 <= h["disc_accuracy"] <= 1.0 for h in hist)
    noise = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    d_data, d_noise = interpret.manifold_distance(vae, x[:50]), interpret.manifold_distance(vae, noise)
    assert float(d_data.mean()) < float(d_noise.mean())
    again, _ = models.train_vaegan(x, latent=3, hidden=32, epochs=8, batch_size=50, lr=3e-3, disc_lr=1e-3,
                                   progress=False)
    assert torch.equal(again(x[:5]), vae(x[:5]))


def test_vaegan_without_its_gan_terms_is_the_vae_loss():
    torch.manual_seed(0)
    vae, disc = models.create("vae", latent=3, hidden=16, size=8), models.Discriminator(hidden=16, size=8)
    x = _blobs(6)
    plain = models.vae_loss(vae, x, generator=torch.Generator().manual_seed(4))
    vae_total, _, stats = models.vaegan_losses(vae, disc, x, gamma=0.0, adv_weight=0.0,
                                               generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(vae_total, plain)
    torch.testing.assert_close(stats["neg_elbo"], plain.detach())
    full, _, _ = models.vaegan_losses(vae, disc, x, generator=torch.Generator().manual_seed(4))
    assert float(full.detach()) > float(plain.detach())  # the feature and adversarial terms are positive and counted


def test_vaegan_step_moves_each_player_by_its_own_loss_only():
    torch.manual_seed(0)
    vae, disc = models.create("vae", latent=3, hidden=16, size=8), models.Discriminator(hidden=16, size=8)
    x = _blobs(6)
    # The expected step, computed by hand: plain SGD on each player's own loss.
    vae_total, disc_total, _ = models.vaegan_losses(vae, disc, x, generator=torch.Generator().manual_seed(2))
    g_vae = torch.autograd.grad(vae_total, list(vae.parameters()), retain_graph=True)
    g_disc = torch.autograd.grad(disc_total, list(disc.parameters()), retain_graph=True)
    # The critic's loss sends nothing to the VAE (its fakes are detached) ...
    assert all(g is None for g in torch.autograd.grad(disc_total, list(vae.parameters()), allow_unused=True,
                                                      retain_graph=True))
    # ... but the VAE's loss does reach the critic, through its features: a joint backward would mix them.
    assert any(g is not None and bool(g.abs().sum() > 0)
               for g in torch.autograd.grad(vae_total, list(disc.parameters()), allow_unused=True))
    expected_vae = [p.detach() - 0.1 * g for p, g in zip(vae.parameters(), g_vae)]
    expected_disc = [p.detach() - 0.1 * g for p, g in zip(disc.parameters(), g_disc)]
    models.vaegan_step(vae, disc, torch.optim.SGD(vae.parameters(), lr=0.1), torch.optim.SGD(disc.parameters(), lr=0.1),
                       x, generator=torch.Generator().manual_seed(2))
    for p, e in zip(list(vae.parameters()) + list(disc.parameters()), expected_vae + expected_disc):
        torch.testing.assert_close(p.detach(), e)


@pytest.mark.parametrize("kwargs,match", [
    (dict(gamma=-1.0), "gamma is a loss weight and must be >= 0, got -1.0; use 0"),
    (dict(disc_lr=0.0), "disc_lr must be a positive learning rate, got 0.0"),
    (dict(lr=-1.0), "lr must be a positive learning rate, got -1.0"),
    (dict(hidden=1), "hidden"),
])
def test_train_vaegan_names_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.train_vaegan(_blobs(4), progress=False, **kwargs)


def test_train_vaegan_refuses_colour_or_non_square_images():
    with pytest.raises(ValueError, match=r"square grey images \(N, 1, S, S\), got shape \(4, 3, 8, 8\)"):
        models.train_vaegan(torch.rand(4, 3, 8, 8), progress=False)
    with pytest.raises(ValueError, match=r"got shape \(4, 1, 8, 6\)"):
        models.train_vaegan(torch.rand(4, 1, 8, 6), progress=False)
