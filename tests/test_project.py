"""The project's own set-up: the README's commands, CI, dependencies and the book build."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_peer

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    block = re.search(r"## The two commands\s+```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must have a '## The two commands' section with a bash block"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_ci_runs_exactly_the_readme_test_command():
    book_cmd, test_cmd = readme_commands()
    assert (book_cmd, test_cmd) == ("make book", "make test")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert test_cmd in ci_lines
    # The browser and peer-agreement tests must fail on CI, not be skipped.
    assert {"export ROBUSTLAB_REQUIRE_BROWSER=1", "export ROBUSTLAB_REQUIRE_PEERS=1"} <= set(ci_lines)
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book", "test"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, re.M), f"make {target} must set itself up"
    # Lint first, then the tests (a make recipe stops at the first failing line).
    recipe = re.search(r"^test: .*\n((?:\t.*\n)+)", makefile, re.M).group(1).split("\n")
    assert recipe[0] == "\t$(BIN)/ruff check ." and "pytest" in recipe[1], recipe


def test_missing_peer_skips_locally_and_fails_on_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ROBUSTLAB_REQUIRE_PEERS", raising=False)
    assert require_peer("json") is json
    with pytest.raises(pytest.skip.Exception, match="robustlab_no_such_peer"):
        require_peer("robustlab_no_such_peer")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_peer("robustlab_no_such_peer")
    for var, value in (("CI", "true"), ("ROBUSTLAB_REQUIRE_PEERS", "1")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(pytest.fail.Exception, match="required here"):
                require_peer("robustlab_no_such_peer")


def test_dependencies_and_extras():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=\[ ]", d)[0]: d for d in project["dependencies"]}
    assert deps["torch"] == "torch>=2.14" and deps["torchvision"] == "torchvision>=0.29"
    for name in ("numpy", "scipy", "matplotlib", "tqdm", "safetensors", "mlxtend", "ipywidgets"):
        assert name in deps, name
    extras = project["optional-dependencies"]
    assert "jupyter-book>=1.0.4,<2" in extras["book"]
    assert any(d.startswith("nbgrader") for d in extras["grading"])
    assert any(d.startswith("pytest") for d in extras["dev"])
    assert any(d.startswith("ruff") for d in extras["dev"])
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120 and {"E", "F", "W", "I"} <= set(ruff["lint"]["select"])


def test_top_level_layout():
    for path in ("book", "exercises", "solutions", "robustlab", "tests", "bench", "_config.yml",
                 "_toc.yml", "README.md", "pyproject.toml", ".ci/run"):
        assert (ROOT / path).exists(), path
    for folder in ("exercises", "solutions"):
        assert any((ROOT / folder).iterdir()), f"{folder}/ must not be empty (it has a README)"


def test_torchvision_imports_with_robustlab():
    out = subprocess.run([sys.executable, "-c", "import robustlab, torchvision; print('ok')"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_book_configuration_publishes_and_launches():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True and config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"]["timeout"] > 0 and config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert config["bibtex_bibfiles"] == ["book/references.bib"] and (ROOT / "book/references.bib").exists()
    assert config["launch_buttons"]["binderhub_url"] and config["launch_buttons"]["colab_url"]
    assert config["repository"]["url"].startswith("https://github.com/")
    assert {"sphinx.ext.autodoc", "sphinx.ext.napoleon"} <= set(config["sphinx"]["extra_extensions"])
    assert "-e \".[book]\"" in (ROOT / "binder/postBuild").read_text()
    workflow = yaml.safe_load((ROOT / ".github/workflows/book.yml").read_text())
    assert workflow[True]["push"]["branches"] == ["main"]  # YAML reads the key `on` as True
    steps = [s.get("run", "") + s.get("uses", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert "make book" in steps and any(s.startswith("actions/deploy-pages") for s in steps)
