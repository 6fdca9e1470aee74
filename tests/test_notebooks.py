"""The lessons are committed in a state that reads well on GitHub and that nbval can check.

nbval (run by the same pytest command) re-executes every lesson; these tests check what a reader
sees *without* running anything: stored outputs, no errors, a course map that lists every lesson.
"""
import json
import re
from pathlib import Path

import pytest

from crossmodal_edu.colab import is_generated
from crossmodal_edu.lessons import course_notebooks, notebook_id

ROOT = Path(__file__).resolve().parents[1]
LESSONS = course_notebooks(ROOT / "notebooks")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _lesson_cells(path):
    """The cells the lesson's author wrote: without the generated Colab badge and set-up cell."""
    return [c for c in _cells(path) if not is_generated(c)]


def _source(cell):
    return "".join(cell["source"])


def test_the_course_has_its_first_three_lessons():
    names = [notebook_id(p) for p in LESSONS]
    assert names[:3] == ["00", "01", "02"], names


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_is_committed_executed_without_errors(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code" and _source(c).strip()]
    assert code, "a lesson without code"
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"code cells {unrun} have no stored output: run `python3 course.py execute {path.name}`"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "cells were run out of order or partly re-run"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"stored error output: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert path.stat().st_size < 3_000_000, "shrink the figures (dpi, fewer images)"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_opens_with_title_and_objectives_and_closes_with_a_way_on(path):
    cells = _lesson_cells(path)
    first, last = _source(cells[0]), _source(cells[-1])
    assert cells[0]["cell_type"] == "markdown" and re.match(rf"# {notebook_id(path)} · ", first), first[:60]
    if notebook_id(path) != "00":
        assert "By the end of this lesson you will be able to" in first
        assert "## Summary" in last and "Read more" in last
    assert "**Next:**" in last


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_has_checked_outputs_and_no_volatile_text_in_them(path):
    checked = [c for c in _cells(path) if c["cell_type"] == "code"
               and _source(c).lstrip().startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked, "mark deterministic, meaningful outputs with # NBVAL_CHECK_OUTPUT"
    for cell in checked:
        text = json.dumps(cell["outputs"])
        assert not re.search(r"0x[0-9a-f]{6,}", text), "a memory address in a checked output"


def test_every_lesson_is_on_the_course_map_in_readme_and_welcome():
    readme = (ROOT / "README.md").read_text()
    welcome = json.dumps(_cells(ROOT / "notebooks" / "00_welcome.ipynb"))
    for path in LESSONS:
        assert f"notebooks/{path.name}" in readme, f"README's course map lacks {path.name}"
        if notebook_id(path) != "00":
            assert f"({path.name})" in welcome, f"the welcome lesson's map lacks {path.name}"
