"""The set-up files agree with one another, so the pip, conda and CI routes install the same course."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names PyTorch and Playwright differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch", "playwright-python": "playwright"}
CONDA_ONLY = {"python", "pip"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject():
    tomllib = pytest.importorskip("tomllib" if __import__("sys").version_info >= (3, 11) else "tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment_yml():
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_conda_environment_lists_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    pip_names = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    conda_names = set()
    for entry in _environment_yml()["dependencies"]:
        if isinstance(entry, str) and _name(entry) not in CONDA_ONLY:
            conda_names.add(CONDA_TO_PYPI.get(_name(entry), _name(entry)))
    assert conda_names == pip_names, (
        f"only in environment.yml: {sorted(conda_names - pip_names)}; "
        f"only in pyproject.toml: {sorted(pip_names - conda_names)}"
    )


def test_conda_environment_installs_this_package_editable_with_test_extra():
    pip_section = next(e["pip"] for e in _environment_yml()["dependencies"] if isinstance(e, dict))
    assert "-e .[test]" in pip_section


# Colab's preinstalled versions (googlecolab/backend-info, pip-freeze.gpu.txt, 2026-08-19); the set-up
# cell installs the course there with --no-deps, so these are what it runs on (tests/colab_stack/).
COLAB = {"numpy": (2, 1), "torch": (2, 11), "matplotlib": (3, 10), "ipywidgets": (7, 7), "tqdm": (4, 67)}


def test_version_floors_accept_colab_preinstalled_versions():
    # No floor may exceed Colab's version: a floor above it would make a plain `pip install` there
    # upgrade PyTorch or the widgets under Colab's frontend, and would claim what was never tested.
    seen = set()
    for requirement in _pyproject()["project"]["dependencies"]:
        name = _name(requirement)
        if name in COLAB:
            seen.add(name)
            floor = re.search(r">=\s*([\d.]+)", requirement)
            assert floor, f"{requirement}: give a floor, not a pin"
            assert "==" not in requirement and "<" not in requirement, f"{requirement} would force a reinstall"
            assert tuple(int(p) for p in floor.group(1).split(".")[:2]) <= COLAB[name], requirement
    assert seen == set(COLAB), f"no floor for {sorted(set(COLAB) - seen)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    *before, last = ci_commands
    assert last == "python3 course.py test"
    # The steps before it only install system packages that some tests need and skip without:
    # Chromium (tests/browser/) and bubblewrap (the class grader's sandbox).
    assert all("apt-get install" in step and ("chromium" in step or "bubblewrap" in step) for step in before), before
    assert "python3 course.py test" in readme and "python3 course.py lab" in readme
