"""The project's own set-up: the README's commands, CI, dependencies and the book build."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book", "test"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, re.M), f"make {target} must set itself up"


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
