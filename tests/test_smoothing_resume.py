"""Randomized smoothing as a package, and certify_dataset's checkpoint: a killed run resumes and
returns exactly what an unbroken run returns; a checkpoint of another run is refused."""

import csv
import io
from pathlib import Path
from types import ModuleType

import pytest
import torch

import robustlab.smoothing.dataset as ds
from robustlab import cli, grading
from robustlab import smoothing as sm
from robustlab.testing import LinearMulti

# The public names of robustlab.smoothing when it was one module: the package must keep them all.
PUBLIC = ["ABSTAIN", "NOISE_BLOCK", "Certificate", "CertificationResults", "sample_counts", "lower_confidence_bound",
          "certificate_from_counts", "predict", "certify", "certify_dataset", "certified_accuracy",
          "average_certified_radius", "plot_certified_accuracy"]
SETTINGS = dict(sigma=0.25, n0=20, n=200, alpha=0.05, batch_size=64, progress=False)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed):
    return torch.Generator().manual_seed(seed)


def problem():
    """Six images near the boundaries of a random three-class linear model: at sigma = 0.25 the
    radii differ from image to image and from one noise draw to another."""
    g = gen(0)
    model = LinearMulti(torch.randn(3, 1, 4, 4, generator=g), torch.zeros(3))
    x = torch.rand(6, 1, 4, 4, generator=g)
    y = torch.tensor([1, 0, 2, 2, 1, 1])
    return model, x, y


def kill_after(monkeypatch, saves):
    """Makes the checkpoint writer raise KeyboardInterrupt right after its ``saves``-th file."""
    real, calls = ds._save_checkpoint, {"n": 0}

    def dying_save(path, state):
        real(path, state)
        calls["n"] += 1
        if calls["n"] == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(ds, "_save_checkpoint", dying_save)
    return real


def count_certify_calls(monkeypatch):
    real, calls = ds._certify, {"n": 0}

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(ds, "_certify", counting)
    return calls


def assert_same_certificates(a, b):
    for name in ("index", "label", "prediction", "radius", "correct"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.sigma, a.n0, a.n, a.alpha) == (b.sigma, b.n0, b.n, b.alpha)


# --- the package --------------------------------------------------------------------------------

def test_the_package_keeps_every_public_name_importable_from_robustlab_smoothing():
    imported = {}
    exec(f"from robustlab.smoothing import {', '.join(PUBLIC)}", imported)
    assert sorted(sm.__all__) == sorted(PUBLIC)
    assert (imported["ABSTAIN"], imported["NOISE_BLOCK"]) == (-1, 500)
    for name in PUBLIC[2:]:
        obj = imported[name]
        assert callable(obj) and not isinstance(obj, ModuleType), name  # no submodule shadows a function
        assert obj.__module__ in ("robustlab.smoothing.algorithms", "robustlab.smoothing.dataset"), name
    # The grader forbids a student's function to call into any file of the package.
    files = {Path(f).name for f in grading.runners.files_of(("robustlab.smoothing",))}
    assert {"__init__.py", "algorithms.py", "dataset.py"} <= files


# --- resuming -----------------------------------------------------------------------------------

def test_a_run_killed_after_three_images_resumes_and_equals_an_unbroken_run(tmp_path, monkeypatch):
    model, x, y = problem()
    g_unbroken = gen(21)
    unbroken = sm.certify_dataset(model, x, y, generator=g_unbroken, **SETTINGS)
    # The test has teeth: radii vary, and the last three images certified with the noise stream
    # started afresh (a resume that forgot the generator's state) would differ.
    assert len(set(unbroken.radius.tolist())) >= 4
    restarted = sm.certify_dataset(model, x[3:], y[3:], generator=gen(21), **SETTINGS)
    assert not torch.equal(restarted.radius, unbroken.radius[3:])

    ckpt = tmp_path / "run.ckpt"
    real_save = kill_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        sm.certify_dataset(model, x, y, generator=gen(21), checkpoint=ckpt, **SETTINGS)
    monkeypatch.setattr(ds, "_save_checkpoint", real_save)

    # The checkpoint holds exactly the three finished images and the generator after them.
    state = torch.load(ckpt, weights_only=True)
    assert state["done"] == 3
    assert torch.equal(state["prediction"], unbroken.prediction[:3])
    assert torch.equal(state["radius"], unbroken.radius[:3])
    assert state["time"].shape == (3,) and bool((state["time"] > 0).all())
    g = gen(21)
    for i in range(3):
        sm.certify(model, x[i], sigma=0.25, n0=20, n=200, alpha=0.05, batch_size=64, generator=g)
    assert torch.equal(state["rng_state"], g.get_state())
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary file left behind

    calls = count_certify_calls(monkeypatch)
    g_resumed = gen(21)
    resumed = sm.certify_dataset(model, x, y, generator=g_resumed, checkpoint=ckpt, **SETTINGS)
    assert calls["n"] == 3  # only the unfinished images
    assert_same_certificates(resumed, unbroken)
    assert torch.equal(resumed.time[:3], state["time"])  # the finished images keep their times
    assert torch.equal(g_resumed.get_state(), g_unbroken.get_state())  # the generator ends where it would

    # The finished checkpoint is kept: a call again reads the table back without certifying.
    assert torch.load(ckpt, weights_only=True)["done"] == 6
    again = sm.certify_dataset(model, x, y, generator=gen(21), checkpoint=ckpt, **SETTINGS)
    assert calls["n"] == 3
    assert_same_certificates(again, unbroken)
    assert torch.equal(again.time, resumed.time)


def global_state(device):
    return torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state(device)


@pytest.mark.parametrize("device", DEVICES)
def test_without_a_generator_the_global_random_state_is_saved_and_restored(device, tmp_path, monkeypatch):
    model, x, y = problem()
    model, x, y = model.to(device), x.to(device), y.to(device)
    ckpt = tmp_path / "global.ckpt"
    with torch.random.fork_rng(devices=[torch.device(device).index or 0] if device != "cpu" else []):
        torch.manual_seed(5)
        unbroken = sm.certify_dataset(model, x, y, **SETTINGS)
        after = global_state(device)
        torch.manual_seed(5)
        real_save = kill_after(monkeypatch, 2)
        with pytest.raises(KeyboardInterrupt):
            sm.certify_dataset(model, x, y, checkpoint=ckpt, **SETTINGS)
        monkeypatch.setattr(ds, "_save_checkpoint", real_save)
        torch.manual_seed(123)  # a new process: the checkpoint's state must take over
        resumed = sm.certify_dataset(model, x, y, checkpoint=ckpt, **SETTINGS)
        assert torch.equal(global_state(device), after)
        torch.manual_seed(123)
        assert not torch.equal(sm.certify_dataset(model, x[2:], y[2:], **SETTINGS).radius, unbroken.radius[2:])
    assert_same_certificates(resumed, unbroken)


@pytest.mark.parametrize("device", DEVICES)
def test_a_generator_on_the_device_of_x_resumes(device, tmp_path, monkeypatch):
    model, x, y = problem()
    model, x, y = model.to(device), x.to(device), y.to(device)
    g_unbroken = torch.Generator(device=device).manual_seed(21)
    unbroken = sm.certify_dataset(model, x, y, generator=g_unbroken, **SETTINGS)
    ckpt = tmp_path / "device.ckpt"
    real_save = kill_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        sm.certify_dataset(model, x, y, generator=torch.Generator(device=device).manual_seed(21), checkpoint=ckpt,
                           **SETTINGS)
    monkeypatch.setattr(ds, "_save_checkpoint", real_save)
    g_resumed = torch.Generator(device=device).manual_seed(21)
    resumed = sm.certify_dataset(model, x, y, generator=g_resumed, checkpoint=ckpt, **SETTINGS)
    assert_same_certificates(resumed, unbroken)
    assert torch.equal(g_resumed.get_state(), g_unbroken.get_state())


def test_a_kill_while_writing_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """The third write dies half-way through its file: the checkpoint still holds two images."""
    model, x, y = problem()
    unbroken = sm.certify_dataset(model, x, y, generator=gen(21), **SETTINGS)
    real_torch_save, calls = torch.save, {"n": 0}

    def torn_save(obj, f):
        buffer = io.BytesIO()
        real_torch_save(obj, buffer)
        data = buffer.getvalue()
        calls["n"] += 1
        if calls["n"] == 3:
            Path(f).write_bytes(data[:len(data) // 2])
            raise KeyboardInterrupt
        Path(f).write_bytes(data)

    ckpt = tmp_path / "torn.ckpt"
    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        sm.certify_dataset(model, x, y, generator=gen(21), checkpoint=ckpt, **SETTINGS)
    monkeypatch.setattr(torch, "save", real_torch_save)
    assert torch.load(ckpt, weights_only=True)["done"] == 2
    resumed = sm.certify_dataset(model, x, y, generator=gen(21), checkpoint=str(ckpt), **SETTINGS)
    assert_same_certificates(resumed, unbroken)


# --- refusing another run's checkpoint -----------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    model, x, y = problem()
    ckpt = tmp_path_factory.mktemp("ckpt") / "done.ckpt"
    sm.certify_dataset(model, x, y, generator=gen(21), checkpoint=ckpt, **SETTINGS)
    return ckpt


def _other_model():
    model, _, _ = problem()
    with torch.no_grad():
        model.bias[0] += 1e-6
    return model


@pytest.mark.parametrize("change,match", [
    (dict(sigma=0.5), "sigma 0.25 there, 0.5 here"),
    (dict(n0=21), "n0 20 there, 21 here"),
    (dict(n=300), "n 200 there, 300 here"),
    (dict(alpha=0.01), "alpha 0.05 there, 0.01 here"),
    (dict(batch_size=32), "batch_size 64 there, 32 here"),
    (dict(model=_other_model), "digest of the model's weights, x and y"),
    (dict(x=lambda x: x.flip(0)), "digest of the model's weights, x and y"),
    (dict(y=lambda y: y.roll(1)), "digest of the model's weights, x and y"),
    (dict(x=lambda x: x[:5], y=lambda y: y[:5]), "images 6 there, 5 here"),
    (dict(generator=lambda: gen(22)), "noise source"),
    (dict(generator=lambda: None), "noise source 'generator cpu [0-9a-f]+' there, 'global cpu' here"),
])
def test_a_checkpoint_of_another_run_is_refused(finished, change, match):
    model, x, y = problem()
    args = dict(SETTINGS, generator=gen(21))
    for key, value in change.items():
        if key == "model":
            model = value()
        elif key == "x":
            x = value(x)
        elif key == "y":
            y = value(y)
        elif key == "generator":
            args["generator"] = value()
        else:
            args[key] = value
    before = finished.read_bytes()
    with pytest.raises(ValueError, match=match) as err:
        sm.certify_dataset(model, x, y, checkpoint=finished, **args)
    assert str(finished) in str(err.value) and "delete it or pass another checkpoint file" in str(err.value)
    assert finished.read_bytes() == before  # refused before anything was written


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    model, x, y = problem()
    (tmp_path / "results.csv").write_text("index,label\n0,1\n")
    with pytest.raises(ValueError, match=r"results\.csv' cannot be read as a certify_dataset checkpoint"):
        sm.certify_dataset(model, x, y, checkpoint=tmp_path / "results.csv", **SETTINGS)
    torch.save({"done": 3}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="is not a certify_dataset checkpoint; delete it"):
        sm.certify_dataset(model, x, y, checkpoint=tmp_path / "other.ckpt", **SETTINGS)
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        sm.certify_dataset(model, x, y, checkpoint=3, **SETTINGS)


# --- the command line ---------------------------------------------------------------------------

def test_cli_certify_resumes_a_killed_run_from_its_results_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "nodata"))  # the embedded digits
    args = ["certify", "mnist-gaussian-0.5", "--sigma", "1.0", "-N", "4", "--n0", "20", "--n", "200",
            "--batch-size", "100"]
    read = lambda d: list(csv.DictReader((d / "mnist-gaussian-0.5-sigma1.csv").open()))
    assert cli.main(args + ["--results-dir", str(tmp_path / "clean")]) == 0
    clean = read(tmp_path / "clean")
    assert len({r["radius"] for r in clean}) >= 3  # radii that depend on the noise stream

    run = tmp_path / "run"
    ckpt = run / ".mnist-gaussian-0.5-sigma1.rank0-of-1.ckpt"
    real_save = kill_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        cli.main(args + ["--results-dir", str(run)])
    monkeypatch.setattr(ds, "_save_checkpoint", real_save)
    assert torch.load(ckpt, weights_only=True)["done"] == 2
    assert not (run / "mnist-gaussian-0.5-sigma1.csv").exists()
    capsys.readouterr()

    # Another seed must not continue this run's noise stream.
    assert cli.main(args + ["--results-dir", str(run), "--seed", "1"]) == 2
    assert str(ckpt) in capsys.readouterr().err

    calls = count_certify_calls(monkeypatch)
    assert cli.main(args + ["--results-dir", str(run)]) == 0
    assert calls["n"] == 2  # the two unfinished images
    resumed = read(run)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]
    assert strip(resumed) == strip(clean)
    # The checkpoint is kept: the same command again reads the finished run back.
    assert torch.load(ckpt, weights_only=True)["done"] == 4
    assert cli.main(args + ["--results-dir", str(run)]) == 0
    assert calls["n"] == 2 and read(run) == resumed
