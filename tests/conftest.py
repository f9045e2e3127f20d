import pytest
import torch

from robustlab import data, models


@pytest.fixture(scope="session")
def embedded():
    return data.embedded_mnist()


@pytest.fixture
def mnist_batch(embedded):
    """32 real digits, 3-4 of each class (the embedded set is sorted by label)."""
    idx = torch.arange(0, 5000, 157)[:32]
    return embedded.x[idx].clone(), embedded.y[idx].clone()


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    return models.SmallCNN().eval()
