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
