"""The course under nbgrader 0.9.6, end to end: generate_assignment, validate and autograde agree with the course.

nbgrader is installed once into its own environment, build/nbgrader-venv (it pins Jupyter packages that the
course's environment need not share); later runs reuse it. Its kernels are the course's Python (a kernelspec
written for the test), so torch and the package come from the course's environment. An nbgrader course
folder is made in a temporary directory, with ``crossmodal_edu.nbgrader_plugin`` in its config, as the
README's instructors' section says. The test skips, and says why, only where nbgrader cannot be installed
(no route to PyPI). Leave it out with ``-m "not nbgrader"``.

What it checks:

* every solution's release, made by nbgrader, has the course's stubs: its code cells are the committed
  exercise's (the buggy code of a fix-the-bug task, ``predicted_std = None`` of a prediction);
* its test cells are worth the task specs' points;
* ``nbgrader validate`` fails a blank exercise;
* ``nbgrader autograde`` gives a full, an empty and a buggy lesson-01 notebook, task by task, the points that
  ``python -m crossmodal_edu.grade`` gives them.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from crossmodal_edu.colab import is_generated
from crossmodal_edu.grading import tasks_for_lesson
from crossmodal_edu.lessons import course_notebooks, notebook_id
from crossmodal_edu.nbgrader_cells import grade_id

pytestmark = pytest.mark.nbgrader

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "nbgrader-venv"
NBGRADER = "nbgrader==0.9.6"
LESSON = "01"
SOLUTION = next(p for p in course_notebooks(ROOT / "solutions") if notebook_id(p) == LESSON)
EXERCISE = ROOT / "exercises" / SOLUTION.name
KERNEL = "crossmodal-edu-test"


def _venv_python() -> Path:
    """nbgrader's environment (built once, reused while its stamp says the same version); skips without PyPI."""
    python = VENV / "bin" / "python"
    stamp = VENV / "nbgrader-stamp.txt"
    key = f"{NBGRADER} {sys.version.split()[0]}"
    if python.exists() and stamp.exists() and stamp.read_text() == key:
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", NBGRADER], capture_output=True, text=True)
    if install.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        pytest.skip(f"cannot install {NBGRADER} into {VENV} (no route to PyPI?): "
                    + (install.stderr.strip().splitlines() or ["no message"])[-1])
    stamp.write_text(key)
    return python


def _edit(source: Path, target: Path, edits: dict) -> None:
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.id in edits:
            cell.source = edits[cell.id](cell.source)
    nbformat.write(nb, target)


def _solution_source(cell_id: str) -> str:
    return next(c.source for c in nbformat.read(SOLUTION, as_version=4).cells if c.id == cell_id)


SUBMISSIONS = {  # student id -> how the submitted notebook is made from the exercise (None: the solution)
    "full": None,
    "empty": {},
    "buggy": {  # two tasks right, two wrong
        "ex01-03": lambda s: _solution_source("ex01-03"),  # right
        "ex01-06": lambda s: "predicted_std = 64",  # the variance, not the standard deviation
        "ex01-10": lambda s: _solution_source("ex01-10"),  # right
    },  # ex01-13 keeps the buggy masked attention it was given
}


# Run in nbgrader's environment: each student's points per test cell, read from nbgrader's gradebook.
SCORES = """
import json, sys
from nbgrader.api import Gradebook
db, notebook, assignment, *students = sys.argv[1:]
with Gradebook("sqlite:///" + db) as gb:
    print(json.dumps({s: {g.name: g.score for g in gb.find_submission_notebook(notebook, assignment, s).grades}
                      for s in students}))
"""


def _nbgrader(python: Path, course: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # nbgrader runs its own executables (alembic) from PATH: its environment's bin first
    env = dict(os.environ, JUPYTER_PATH=str(course / "jupyter"), PYTHONPATH="",
               PATH=os.pathsep.join([str(python.parent), os.environ.get("PATH", "")]))
    result = subprocess.run([str(python), "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                            text=True, timeout=timeout)
    return result


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """An nbgrader course folder: the solutions as the source, three lesson-01 submissions, autograded."""
    python = _venv_python()
    course = tmp_path_factory.mktemp("nbgrader-course")
    kernel = course / "jupyter" / "kernels" / KERNEL
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "crossmodal-edu (test)", "language": "python",
        "env": {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}}))
    (course / "nbgrader_config.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from crossmodal_edu.nbgrader_plugin import configure\n"
        f"c = configure(get_config(), kernel_name={KERNEL!r})\n"
        f"c.CourseDirectory.root = {str(course)!r}\n")
    for path in course_notebooks(ROOT / "solutions"):
        (course / "source" / "all").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, course / "source" / "all" / path.name)
    (course / "source" / "ex01").mkdir(parents=True)
    shutil.copy(SOLUTION, course / "source" / "ex01" / SOLUTION.name)
    runs = {}
    for assignment in ("all", "ex01"):
        runs[f"generate {assignment}"] = _nbgrader(python, course, "generate_assignment", assignment, "--force")
    for student, edits in SUBMISSIONS.items():
        folder = course / "submitted" / student / "ex01"
        folder.mkdir(parents=True)
        if edits is None:
            shutil.copy(SOLUTION, folder / SOLUTION.name)
        else:
            _edit(EXERCISE, folder / SOLUTION.name, edits)
    runs["validate empty"] = _nbgrader(python, course, "validate",
                                       str(course / "submitted" / "empty" / "ex01" / SOLUTION.name))
    runs["autograde"] = _nbgrader(python, course, "autograde", "ex01", "--force")
    runs["export"] = _nbgrader(python, course, "export", "--to", str(course / "grades.csv"))
    scores = subprocess.run([str(python), "-c", SCORES, str(course / "gradebook.db"), SOLUTION.stem, "ex01",
                             *SUBMISSIONS], capture_output=True, text=True, cwd=course,
                            env=dict(os.environ, PATH=os.pathsep.join([str(python.parent), os.environ["PATH"]])))
    runs["scores"] = scores
    return {"path": course, "runs": runs,
            "scores": json.loads(scores.stdout) if scores.returncode == 0 else None}


def _ok(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, f"{run.args}\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_generate_assignment_accepts_the_solutions(course):
    _ok(course["runs"]["generate all"])
    _ok(course["runs"]["generate ex01"])


@pytest.mark.parametrize("path", course_notebooks(ROOT / "solutions"), ids=lambda p: p.name)
def test_the_release_keeps_the_courses_stubs_and_buggy_code(course, path):
    _ok(course["runs"]["generate all"])
    release = nbformat.read(course["path"] / "release" / "all" / path.name, as_version=4)
    exercise = nbformat.read(ROOT / "exercises" / path.name, as_version=4)
    mine = {c.id: c.source for c in _code(release) if not is_generated(c)}
    theirs = {c.id: c.source for c in _code(exercise) if not is_generated(c)}
    assert mine == theirs
    assert "### STUB" not in "".join(mine.values()) and "### BEGIN" not in "".join(mine.values())


@pytest.mark.parametrize("path", course_notebooks(ROOT / "solutions"), ids=lambda p: p.name)
def test_the_release_test_cells_are_worth_the_task_specs_points(course, path):
    _ok(course["runs"]["generate all"])
    release = nbformat.read(course["path"] / "release" / "all" / path.name, as_version=4)
    graded = {c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"] for c in release.cells
              if c.metadata.get("nbgrader", {}).get("grade")}
    assert graded == {grade_id(t.id): t.points for t in tasks_for_lesson(notebook_id(path))}


def test_validate_fails_a_blank_exercise(course):
    run = course["runs"]["validate empty"]
    assert "VALIDATION FAILED" in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.fixture(scope="module")
def course_grades(course, tmp_path_factory):
    """The course's own grader on the same three submissions."""
    folder = tmp_path_factory.mktemp("same-submissions")
    for student in SUBMISSIONS:
        shutil.copy(course["path"] / "submitted" / student / "ex01" / SOLUTION.name, folder / f"{student}.ipynb")
    out = folder / "grades.csv"
    run = subprocess.run([sys.executable, "-m", "crossmodal_edu.grade", str(folder), "--out", str(out),
                          "--seeds", "2", "--seed", "7", "--cell-timeout", "120"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    _ok(run)
    return {Path(r["submission"]).stem: {grade_id(t["task"]): t["points"] for t in r["tasks"]}
            for r in json.loads(out.with_suffix(".json").read_text())}


def test_autograde_gives_every_task_the_points_the_course_grader_gives(course, course_grades):
    _ok(course["runs"]["autograde"])
    assert course["scores"] is not None, course["runs"]["scores"].stderr[-3000:]
    nbgrader_scores = {s: {name: int(score) for name, score in grades.items()} for s, grades in course["scores"].items()}
    assert nbgrader_scores == course_grades


def test_autograde_gives_full_marks_to_a_solution_none_to_an_exercise_and_none_to_wrong_answers(course):
    _ok(course["runs"]["autograde"])
    scores = course["scores"]
    total = sum(t.points for t in tasks_for_lesson(LESSON))
    assert sum(scores["full"].values()) == total
    assert sum(scores["empty"].values()) == 0
    points = {grade_id(t.id): t.points for t in tasks_for_lesson(LESSON)}
    assert scores["buggy"] == {**points, grade_id("01.score_std"): 0,  # the variance
                               grade_id("01.masked_attention"): 0}  # the bug it was given, not fixed


def test_export_writes_the_grades(course):
    _ok(course["runs"]["export"])
    with open(course["path"] / "grades.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(SUBMISSIONS)
    assert float(rows["full"]["max_score"]) == sum(t.points for t in tasks_for_lesson(LESSON))
