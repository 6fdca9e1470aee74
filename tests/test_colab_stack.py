"""The course on Google Colab's own package stack: tests/colab_stack/run.py builds an environment with
Colab's versions (ipywidgets 7.7.1, IPython 7.34, ipykernel 6.17, jupyter_client 7.4, numpy 2.1.3,
matplotlib 3.10.0, ...), installs the course there the way the set-up cell does, runs every lesson,
exercise and solution in it and drives the explorers' callbacks.

The first run builds the environment (build/colab-stack-venv; a few minutes, from PyPI), later runs
reuse it. The test skips, and says why, only where that environment cannot be built (no route to a
package index with Colab's versions). Leave it out with ``-m "not colab_stack"``.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crossmodal_edu import colab

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_stack_run", ROOT / "tests" / "colab_stack" / "run.py")
colab_stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_stack)

# Colab's runtime as published (googlecolab/backend-info, pip-freeze.gpu.txt, 2026-08-19), written
# out here independently of pins.txt, so that an edit of one that the other lacks fails.
COLAB = {"ipywidgets": "7.7.1", "ipython": "7.34.0", "ipykernel": "6.17.1", "jupyter_client": "7.4.9",
         "numpy": "2.1.3", "matplotlib": "3.10.0", "nbformat": "5.11.1", "nbclient": "0.10.4", "tqdm": "4.67.3"}


def test_the_pins_are_colabs_versions():
    for name, version in COLAB.items():
        assert colab_stack.pinned(name) == version, name
    # torch is the one exception, and says so: a CPU build for the Python this check runs on.
    assert colab_stack.pinned("torch").endswith("+cpu")
    assert "torch 2.13.0+cpu  Colab has torch 2.11.0" in colab_stack.PINS.read_text()


def test_every_line_of_the_pins_is_one_exact_version():
    lines = [line for line in colab_stack.PINS.read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+]+", line) for line in lines), lines
    names = [line.split("==")[0].lower().replace("_", "-") for line in lines]
    assert len(names) == len(set(names)), "a package pinned twice"


def test_the_set_up_cell_installs_the_checkouts_wheel_in_place_of_the_repository():
    wheel = Path("/tmp/wheels/crossmodal_edu-0.1.0-py3-none-any.whl")
    source = colab_stack.colab_source(colab.SETUP_SOURCE, wheel)
    assert str(wheel) in source and "git+" not in source
    assert source.replace(str(wheel), f"git+{colab.REPOSITORY}@{colab.BRANCH}") == colab.SETUP_SOURCE
    with pytest.raises(RuntimeError, match="no longer installs"):
        colab_stack.colab_source("print('no install here')", wheel)


@pytest.mark.colab_stack
def test_every_notebook_and_explorer_runs_on_colabs_package_stack():
    log = ROOT / "build" / "test-artifacts" / "colab-stack.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "colab_stack" / "run.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    log.write_text(result.stdout)
    if result.returncode == colab_stack.CANNOT_BUILD:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    failed = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert result.returncode == 0, "\n".join(failed) + f"\n(the whole report: {log.relative_to(ROOT)})\n" \
        + result.stdout[-6000:]


def test_checked_outputs_compare_as_nbval_does():
    _spec = importlib.util.spec_from_file_location("colab_stack_inside", ROOT / "tests" / "colab_stack" / "inside.py")
    inside = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(inside)
    sanitizers = inside._sanitizers(ROOT)

    def cell(*outputs):
        return {"outputs": [{"output_type": "stream", "name": "stdout", "text": t} if isinstance(t, str)
                            else {"output_type": "execute_result", "data": {"text/plain": t[0]}} for t in outputs]}

    # a stream cut into pieces shows the same text; a figure's size and an address are volatile
    assert inside._shown_text(cell("a\n", "b\n"), sanitizers) == inside._shown_text(cell("a\nb\n"), sanitizers)
    assert inside._shown_text(cell(("<Figure size 640x480 with 2 Axes>",)), sanitizers) == \
        inside._shown_text(cell(("<Figure size 800x300 with 2 Axes>",)), sanitizers)
    assert inside._shown_text(cell("at 0x7f3a2b\n"), sanitizers) == inside._shown_text(cell("at 0x55e1c0\n"), sanitizers)
    # what a learner would read differently is a difference
    assert inside._shown_text(cell("weights sum to 1.0\n"), sanitizers) != \
        inside._shown_text(cell("weights sum to 0.9\n"), sanitizers)
    assert inside._shown_text(cell("a\n", ("1",)), sanitizers) != inside._shown_text(cell(("1",), "a\n"), sanitizers)
