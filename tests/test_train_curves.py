"""Training curves: fit's on_epoch hook, robust_probe against a closed form, best_epoch."""

import pytest
import torch
from torch import nn

from robustlab.testing import LinearBinary
from robustlab.train import TrainConfig, best_epoch, fit, robust_probe


def blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 + 0.15 * torch.randn(n, 1, 4, 4, generator=g)
    x[y == 0, :, :, :2] += 0.3
    x[y == 1, :, :, 2:] += 0.3
    return x.clamp(0, 1), y


def test_probe_matches_the_closed_form_of_a_linear_model():
    # Logit w.x + b with w = +1 on the right half, -1 on the left: the worst Linf perturbation
    # of radius eps lowers the margin |w.x + b| by exactly eps * ||w||_1 = 16 eps when no pixel
    # is clipped, so PGD and FGSM flip exactly the digits whose margin is below 16 eps.
    w = torch.ones(1, 4, 4)
    w[..., :2] = -1
    model = LinearBinary(w, b=0.0).eval()
    g = torch.Generator().manual_seed(1)
    x = 0.3 + 0.4 * torch.rand(300, 1, 4, 4, generator=g)  # in [0.3, 0.7]: eps = 0.02 never clips
    f = x.flatten(1) @ w.flatten()
    y = (f > 0).long()
    eps = 0.02
    expected = ((f.abs() > 16 * eps).float().mean()).item()
    assert 0.2 < expected < 0.95  # the case is not trivial
    row = robust_probe(x, y, eps=eps, steps=5, prefix="val")(1, model)
    assert row["val_clean"] == 1.0
    assert row["val_pgd"] == pytest.approx(expected, abs=1 / 300)
    assert row["val_fgsm"] == pytest.approx(expected, abs=1 / 300)


def test_on_epoch_rows_join_the_history_and_survive_a_resume(tmp_path):
    x, y = blobs()
    calls = []

    def on_epoch(epoch, model):
        calls.append((epoch, model.training))
        return {"probe": 0.1 * epoch}

    config = TrainConfig(epochs=3, batch_size=20, lr=0.01)
    ckpt = tmp_path / "run.pt"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    fit(model, (x, y), TrainConfig(epochs=3, batch_size=20, lr=0.01), checkpoint=ckpt, progress=False,
        on_epoch=on_epoch)
    assert calls == [(1, False), (2, False), (3, False)]  # after every epoch, in eval mode
    stored = torch.load(ckpt, weights_only=True)["history"]
    assert [h["probe"] for h in stored] == pytest.approx([0.1, 0.2, 0.3])
    resumed = fit(model, (x, y), config, checkpoint=ckpt, progress=False, on_epoch=on_epoch)
    assert [h["probe"] for h in resumed.history] == pytest.approx([0.1, 0.2, 0.3]) and len(calls) == 3


def test_probe_on_a_real_training_run_records_three_accuracies():
    x, y = blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    result = fit(model, (x[:160], y[:160]), TrainConfig(method="fgsm", eps=0.05, epochs=2, batch_size=20, lr=0.01),
                 progress=False, on_epoch=robust_probe(x[160:], y[160:], eps=0.05, steps=3))
    for row in result.history:
        assert 0 <= row["heldout_pgd"] <= row["heldout_clean"] <= 1
        assert row["heldout_pgd"] <= row["heldout_fgsm"] + 1 / 40  # PGD from a random start vs one step


def test_best_epoch_takes_the_earliest_maximum():
    history = [{"epoch": 1, "heldout_pgd": 0.2}, {"epoch": 2, "heldout_pgd": 0.5},
               {"epoch": 3, "heldout_pgd": 0.5}, {"epoch": 4, "heldout_pgd": 0.4}]
    assert best_epoch(history) == 2
    assert best_epoch(history[:1]) == 1
    with pytest.raises(ValueError, match="key='val_pgd' is missing.*heldout_pgd"):
        best_epoch(history, "val_pgd")
    with pytest.raises(ValueError, match="history is empty"):
        best_epoch([])


def test_bad_callbacks_and_probes_are_named():
    x, y = blobs(40)
    config = TrainConfig(epochs=1, batch_size=20)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(TypeError, match="on_epoch must be a function"):
        fit(model, (x, y), config, progress=False, on_epoch={"probe": 1})
    with pytest.raises(TypeError, match="on_epoch must return a dict"):
        fit(model, (x, y), config, progress=False, on_epoch=lambda e, m: 0.5)
    with pytest.raises(ValueError, match=r"on_epoch returned \['loss'\].*rename"):
        fit(model, (x, y), config, progress=False, on_epoch=lambda e, m: {"loss": 1.0})
    with pytest.raises(ValueError, match="fgsm=True.*norm='l2'.*fgsm=False"):
        robust_probe(x, y, eps=0.5, norm="l2")
    with pytest.raises(ValueError, match="prefix"):
        robust_probe(x, y, eps=0.1, prefix="held out")
    with pytest.raises(ValueError, match="steps"):
        robust_probe(x, y, eps=0.1, steps=0)
