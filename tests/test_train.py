"""Training: objectives, gradreg's exact penalty, fresh noise, resume, DDP, guard, bad config."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from robustlab import train
from robustlab.testing import LinearBinary
from robustlab.train import TrainConfig, fit, training_loss
from robustlab.train import loop as train_loop


def blobs(n=200, seed=0):
    """Two classes of 1x4x4 images: bright left half vs bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 + 0.15 * torch.randn(n, 1, 4, 4, generator=g)
    x[y == 0, :, :, :2] += 0.3
    x[y == 1, :, :, 2:] += 0.3
    return x.clamp(0, 1), y


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


METHOD_CONFIGS = {
    "standard": dict(),
    "pgd": dict(eps=0.1, steps=3),
    "pgd-l2": dict(method="pgd", norm="l2", eps=0.3, steps=3),
    "fgsm_rs": dict(eps=0.1),
    "fgsm": dict(eps=0.1),
    "trades": dict(eps=0.1, steps=3, beta=3.0),
    "gradreg": dict(lam=1.0),
    "gaussian": dict(sigma=0.2),
}


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_each_method_decreases_its_own_objective(name):
    fields = dict(method=name, epochs=6, batch_size=20, lr=0.02)
    fields.update(METHOD_CONFIGS[name])
    config = TrainConfig(**fields)
    x, y = blobs()
    model = mlp()

    def objective():
        g = torch.Generator().manual_seed(123)
        model.train()
        with torch.enable_grad():
            loss, _ = training_loss(model, x, y, config, generator=g)
        return float(loss.detach())

    before = objective()
    result = fit(model, (x, y), config, progress=False)
    assert not model.training  # fit leaves the model in eval mode
    after = objective()
    assert after < 0.7 * before, (before, after)
    assert len(result.history) == 6 and result.stopped is None


def test_gradreg_adds_exactly_lambda_times_the_squared_input_gradient():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 3, generator=g)
    model = LinearBinary(w, b=0.2)
    x = torch.rand(7, 1, 3, 3, generator=g)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    lam = 0.7
    config = TrainConfig(method="gradreg", lam=lam)
    loss, _ = training_loss(model, x, y, config)
    # logits (0, f): dCE/dx = (softmax_1 - y) * w, so ||grad||^2 = (sigmoid(f) - y)^2 ||w||^2.
    f = x.flatten(1) @ w.flatten() + 0.2
    ce = F.cross_entropy(torch.stack([torch.zeros_like(f), f], 1), y, reduction="none")
    penalty = (torch.sigmoid(f) - y.float()) ** 2 * w.pow(2).sum()
    torch.testing.assert_close(loss, (ce + lam * penalty).mean())


def test_gradreg_trains_through_the_penalty():
    """Double backprop: the parameter gradient equals a finite difference of the full loss."""
    g = torch.Generator().manual_seed(1)
    model = LinearBinary(torch.randn(1, 2, 2, generator=g, dtype=torch.float64), b=0.1)
    x = torch.rand(5, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    config = TrainConfig(method="gradreg", lam=3.0)
    loss, _ = training_loss(model, x, y, config)
    (grad_b,) = torch.autograd.grad(loss, model.b)
    h = 1e-6
    with torch.no_grad():
        model.b += h
    up = training_loss(model, x, y, config)[0].detach()
    with torch.no_grad():
        model.b -= 2 * h
    down = training_loss(model, x, y, config)[0].detach()
    fd = (up - down) / (2 * h)
    torch.testing.assert_close(grad_b, fd, atol=1e-6, rtol=1e-5)
    ce_only = TrainConfig(method="gradreg", lam=0.0)
    with torch.no_grad():
        model.b += h
    (grad_ce,) = torch.autograd.grad(training_loss(model, x, y, ce_only)[0], model.b)
    assert abs(float(grad_b - grad_ce)) > 1e-3  # the penalty really contributes


class Recorder(nn.Module):
    """Remembers the inputs it sees."""

    def __init__(self):
        super().__init__()
        self.net = mlp()
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.net(x)


def test_gaussian_draws_fresh_noise_every_batch():
    x = torch.full((40, 1, 4, 4), 0.5)
    y = torch.zeros(40, dtype=torch.long)
    model = Recorder()
    fit(model, (x, y), TrainConfig(method="gaussian", sigma=0.5, epochs=2, batch_size=10), progress=False)
    noises = [s - 0.5 for s in model.seen]  # every clean pixel is 0.5
    assert len(noises) == 8
    assert all(not torch.allclose(a, b) for i, a in enumerate(noises) for b in noises[i + 1:])
    all_noise = torch.cat(noises)
    assert abs(float(all_noise.std()) - 0.5) < 0.05 and abs(float(all_noise.mean())) < 0.05
    assert float(all_noise.max()) > 0.5  # not clamped to [0, 1]: Cohen et al. add raw noise


def test_same_seed_same_weights_and_different_seed_differs():
    x, y = blobs()
    def run(seed):
        model = mlp()
        fit(model, (x, y), TrainConfig(method="pgd", eps=0.1, steps=2, epochs=2, batch_size=20,
                                       seed=seed), progress=False)
        return torch.cat([p.flatten() for p in model.parameters()])
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


class Killer(nn.Module):
    """Raises after a number of training forward calls, like a kill in the middle of an epoch."""

    def __init__(self, net, after):
        super().__init__()
        self.net, self.after, self.calls = net, after, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                raise KeyboardInterrupt("killed")
        return self.net(x)


@pytest.mark.parametrize("method", ["pgd", "gaussian", "fgsm_rs"])
def test_resume_after_a_kill_gives_the_same_weights(tmp_path, method):
    x, y = blobs()
    config = TrainConfig(method=method, eps=0.1, steps=2, sigma=0.3, epochs=4, batch_size=20, lr=0.01)
    reference = mlp()
    ref_result = fit(reference, (x, y), config, progress=False)

    ckpt = tmp_path / "run.pt"
    victim = Killer(mlp(), after=25)  # 10 batches per epoch: dies in epoch 3
    with pytest.raises(KeyboardInterrupt):
        fit(victim, (x, y), config, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file
    resumed = Killer(mlp(seed=9), after=10 ** 9)  # other initial weights: the checkpoint wins
    result = fit(resumed, (x, y), config, checkpoint=ckpt, progress=False)
    for a, b in zip(reference.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in result.history] == [h["loss"] for h in ref_result.history]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    x, y = blobs()
    ckpt = tmp_path / "run.pt"
    fit(mlp(), (x, y), TrainConfig(epochs=1, batch_size=20), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="another config"):
        fit(mlp(), (x, y), TrainConfig(epochs=1, batch_size=20, lr=0.5), checkpoint=ckpt, progress=False)


def test_fgsm_rs_guard_rolls_back_on_a_collapse(monkeypatch, tmp_path):
    x, y = blobs()
    config = TrainConfig(method="fgsm_rs", eps=0.1, epochs=4, batch_size=20, lr=0.01)
    accuracies = iter([0.8, 0.85, 0.1, 0.9])  # the guard's PGD accuracy collapses after epoch 3
    monkeypatch.setattr(train_loop, "evaluate_accuracy", lambda *a, **k: next(accuracies))
    model = Killer(mlp(), after=10 ** 9)
    result = fit(model, (x, y), config, progress=False)
    assert result.stopped and "catastrophic overfitting at epoch 3" in result.stopped
    assert len(result.history) == 3 and result.history[-1]["rolled_back"] == 1.0
    assert [h["guard_accuracy"] for h in result.history] == [0.8, 0.85, 0.1]

    # The same run killed in epoch 3 has the epoch-2 weights in its checkpoint: they must be
    # exactly the weights the guard restored.
    accuracies = iter([0.8, 0.85])
    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(Killer(mlp(), after=20), (x, y), config, checkpoint=ckpt, progress=False)
    epoch2 = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(epoch2[k], v) for k, v in model.state_dict().items())


def test_plain_fgsm_records_the_guard_but_never_rolls_back(monkeypatch):
    x, y = blobs()
    config = TrainConfig(method="fgsm", eps=0.1, epochs=4, batch_size=20, lr=0.01)
    accuracies = iter([0.8, 0.85, 0.1, 0.05])  # the same collapse that stops fgsm_rs
    monkeypatch.setattr(train_loop, "evaluate_accuracy", lambda *a, **k: next(accuracies))
    result = fit(mlp(), (x, y), config, progress=False)
    assert result.stopped is None and len(result.history) == 4
    assert [h["guard_accuracy"] for h in result.history] == [0.8, 0.85, 0.1, 0.05]
    assert not any("rolled_back" in h for h in result.history)


def test_random_shift_translates_each_image_with_zero_fill():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    assert torch.equal(train.random_shift(x, 0), x)
    out = train.random_shift(x, 2, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(3))
    for i in range(2):
        dy, dx = int(offsets[0, i]) - 2, int(offsets[1, i]) - 2  # content moves by (-dy, -dx)
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        expected = padded[:, 2 + dy:2 + dy + 5, 2 + dx:2 + dx + 5]
        assert torch.equal(out[i], expected)
    assert out.shape == x.shape and float(out.sum()) < float(x.sum())  # some pixels left the frame


def test_lr_schedules():
    assert train_loop._lr_factor("constant", 0.7) == 1.0
    assert train_loop._lr_factor("cyclic", 0.0) == 0.0
    assert train_loop._lr_factor("cyclic", 0.4) == pytest.approx(1.0)
    assert train_loop._lr_factor("cyclic", 0.7) == pytest.approx(0.5)
    assert train_loop._lr_factor("cyclic", 1.0) == 0.0
    assert train_loop._lr_factor("cosine", 0.5) == pytest.approx(0.5)


def test_eps_ramp_and_alpha_defaults():
    x, y = blobs()
    result = fit(mlp(), (x, y), TrainConfig(method="pgd", eps=0.2, steps=4, epochs=3,
                                            eps_ramp_epochs=2, batch_size=20), progress=False)
    # The ramp reaches eps at the first batch of epoch 3; the row keeps the last batch's eps.
    assert result.history[0]["eps"] == pytest.approx(0.2 * 9 / 20)
    assert result.history[2]["eps"] == pytest.approx(0.2)
    assert TrainConfig(method="pgd", eps=0.3, steps=10).step_size(0.3) == pytest.approx(0.075)
    assert TrainConfig(method="fgsm_rs", eps=0.3).step_size(0.3) == pytest.approx(0.375)
    assert TrainConfig(method="pgd", alpha=0.01).step_size(0.3) == 0.01


@pytest.mark.parametrize("fields,error,match", [
    (dict(method="adversarial"), ValueError, "unknown method 'adversarial'; valid values are 'standard', 'pgd'"),
    (dict(method="pgd", eps=-0.1), ValueError, r"eps must be >= 0(\.0)?, got -0\.1"),
    (dict(method="pgd", eps=0.0), ValueError, "needs eps > 0"),
    (dict(method="fgsm_rs", norm="l2"), ValueError, "Linf method"),
    (dict(epochs=0), ValueError, "epochs must be >= 1"),
    (dict(lr=0), ValueError, "lr must be > 0"),
    (dict(schedule="step"), ValueError, "'constant', 'cyclic', 'cosine'"),
    (dict(sigma=-1.0), ValueError, "sigma must be > 0"),
])
def test_bad_config_fails_before_training(fields, error, match):
    model = mlp()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(error, match=match):
        fit(model, blobs(), TrainConfig(**fields), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bad_data_fails_before_training():
    x, y = blobs()
    with pytest.raises(ValueError, match="pair \\(x, y\\)"):
        fit(mlp(), None, TrainConfig(), progress=False)
    with pytest.raises(ValueError, match="data is empty"):
        fit(mlp(), (x[:0], y[:0]), TrainConfig(), progress=False)
    with pytest.raises(ValueError, match="larger than the 10 training examples"):
        fit(mlp(), (x[:10], y[:10]), TrainConfig(batch_size=20), progress=False)
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        fit(mlp(), (x * 4, y), TrainConfig(), progress=False)
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['epoch'\\]"):
        TrainConfig.from_dict({"epoch": 3})


# --- DistributedDataParallel on 2 CPU processes (gloo) ------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, method, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = mlp()
        fit(model, blobs(), TrainConfig(method=method, eps=0.1, epochs=2, batch_size=20, lr=0.05),
            progress=False)
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["standard", "fgsm"])
def test_ddp_on_two_processes_matches_one_process(tmp_path, method):
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), method, str(out)), nprocs=2, join=True)
    single = mlp()
    fit(single, blobs(), TrainConfig(method=method, eps=0.1, epochs=2, batch_size=20, lr=0.05),
        progress=False)
    ddp_state = torch.load(out, weights_only=True)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, atol=1e-5, rtol=1e-5)
