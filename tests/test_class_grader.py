"""The class grader on a folder of submissions: full, empty, buggy, looping and malformed ones.

Each notebook runs in a fresh sandboxed kernel; the report gives every submission a clear line, and no
submission is modified. The time limits are generous (a busy 2-core laptop must pass too): only the
looping submission meets them, and it is reported as timed out, never as a silent zero.
"""
import ast
import builtins
import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from crossmodal_edu.grade import hidden_tests, solution_imports
from crossmodal_edu.grading import lessons, tasks_for_lesson
from crossmodal_edu.lessons import course_notebooks, notebook_id

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_01 = ROOT / "solutions" / "01_attention_in_numpy.ipynb"
EXERCISE_01 = ROOT / "exercises" / "01_attention_in_numpy.ipynb"
CELL_TIMEOUT = 15  # seconds; the loop costs two of these (its own check cell, then the regrade)
SOLUTIONS = {notebook_id(p): p for p in course_notebooks(ROOT / "solutions")}


def _edit(source: Path, target: Path, edits: dict) -> None:
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.id in edits:
            cell.source = edits[cell.id](cell.source)
    nbformat.write(nb, target)


def _make_submissions(folder: Path) -> None:
    for path in SOLUTIONS.values():  # a correct submission of every lesson: each must get full marks
        (folder / f"full_{path.name}").write_bytes(path.read_bytes())
    for name in ("01_attention_in_numpy.ipynb", "02_cross_modal_attention.ipynb"):
        (folder / f"empty_{name}").write_bytes((ROOT / "exercises" / name).read_bytes())
    _edit(EXERCISE_01, folder / "buggy.ipynb", {
        # softmax without max subtraction: a catalogued mistake
        "ex01-03": lambda s: s.split("    # YOUR CODE")[0]
        + "    e = np.exp(z)\n    return e / e.sum(axis=axis, keepdims=True)",
        "ex01-06": lambda s: "predicted_std = 64",  # a misconception
        "ex01-08": lambda s: "print('x' * 2_000_000)",  # huge output
        "ex01-10": lambda s: "raise RuntimeError('I deleted attention')",  # an exception, a missing function
    })
    _edit(EXERCISE_01, folder / "loop.ipynb", {
        "ex01-03": lambda s: s.replace("    # YOUR CODE", "    while True:\n        pass\n    # YOUR CODE"),
    })
    # The public checks are meant to fail whatever a hidden test fails (a single vector, say, is one of
    # their cases); only an answer that singles out the hidden test's own input slips past them.
    _edit(SOLUTION_01, folder / "hidden.ipynb", {
        "ex01-03": lambda s: s.replace("    ### BEGIN SOLUTION",
                                       "    if np.shape(z) == (1, 2):\n        return np.full((1, 2), 0.5)\n"
                                       "    ### BEGIN SOLUTION"),
    })
    _edit(SOLUTION_01, folder / "dies.ipynb", {"ex01-08": lambda s: "import os\nos._exit(1)"})
    (folder / "malformed.ipynb").write_bytes(SOLUTION_01.read_bytes()[:700])


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    _make_submissions(folder)
    before = _digests(folder)
    out = tmp_path_factory.mktemp("report") / "grades.csv"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "crossmodal_edu.grade", str(folder), "--out", str(out), "--jobs", "2",
         "--cell-timeout", str(CELL_TIMEOUT), "--notebook-timeout", "120", "--seeds", "2", "--seed", "7"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    seconds = time.monotonic() - started
    records = {Path(r["submission"]).name: r for r in json.loads(out.with_suffix(".json").read_text())}
    with open(out, newline="") as f:
        rows = {Path(r["submission"]).name: r for r in csv.DictReader(f)}
    return {"run": run, "records": records, "rows": rows, "before": before, "after": _digests(folder),
            "seconds": seconds}


def _tasks(record):
    return {t["task"]: t for t in record["tasks"]}


def test_the_batch_finishes_within_its_time_limits_and_reports_every_submission(graded):
    assert graded["run"].returncode == 0, graded["run"].stderr
    assert len(graded["records"]) == 7 + len(SOLUTIONS)
    assert graded["seconds"] < 840
    assert "wrote" in graded["run"].stdout


def test_no_submission_is_modified(graded):
    assert graded["after"] == graded["before"]


@pytest.mark.parametrize("lesson", lessons())
def test_a_full_submission_gets_full_marks(graded, lesson):
    record = graded["records"][f"full_{SOLUTIONS[lesson].name}"]
    total = sum(t.points for t in tasks_for_lesson(lesson))
    assert (record["status"], record["points"], record["max_points"]) == ("graded", total, total), record
    assert record["notes"] == []
    assert all(t["status"] == "passed" for t in record["tasks"])


@pytest.mark.parametrize("lesson", ["01", "02"])
def test_an_empty_submission_scores_zero_with_every_task_not_attempted(graded, lesson):
    name = {"01": "empty_01_attention_in_numpy.ipynb", "02": "empty_02_cross_modal_attention.ipynb"}[lesson]
    record = graded["records"][name]
    assert (record["status"], record["points"]) == ("graded", 0)
    assert {t["status"] for t in record["tasks"]} == {"not attempted"}


def test_a_buggy_submission_gets_named_mistakes_and_notes_on_its_broken_cells(graded):
    record = graded["records"]["buggy.ipynb"]
    tasks = _tasks(record)
    assert record["status"] == "graded" and record["points"] == 0
    assert tasks["01.softmax"]["mistake"] == "no max subtraction"
    assert "mistake found: no max subtraction" in tasks["01.softmax"]["feedback"]
    assert tasks["01.score_std"]["mistake"] == "that is the variance, not the standard deviation"
    assert tasks["01.attention"]["status"] == "missing"
    assert "defines no `attention`" in tasks["01.attention"]["feedback"]
    assert tasks["01.masked_attention"]["status"] == "not attempted"  # still the code it was given
    notes = " | ".join(record["notes"])
    assert "printed more than" in notes and "RuntimeError in cell" in notes and "I deleted attention" in notes


def test_hidden_tests_catch_what_the_public_checks_do_not(graded):
    record = graded["records"]["hidden.ipynb"]
    softmax = _tasks(record)["01.softmax"]
    assert softmax["status"] == "failed" and "Hidden test: softmax([0, log 3]) must be [1/4, 3/4]" in softmax["feedback"]
    assert record["points"] == 7


def test_an_infinite_loop_is_interrupted_and_reported_and_the_rest_is_graded(graded):
    record = graded["records"]["loop.ipynb"]
    tasks = _tasks(record)
    assert record["status"] == "graded"
    assert tasks["01.softmax"]["status"] == "timed out"
    assert f"ran past the {CELL_TIMEOUT} s limit" in tasks["01.softmax"]["feedback"]
    assert any("was interrupted (an infinite loop?)" in note for note in record["notes"])
    assert tasks["01.attention"]["status"] == "not attempted"


def test_a_cell_that_kills_the_kernel_is_left_out_of_a_second_run(graded):
    record = graded["records"]["dies.ipynb"]
    assert record["points"] == 10
    assert any("the kernel died in cell" in note and "again in a fresh kernel" in note for note in record["notes"])


def test_a_malformed_notebook_gets_a_clear_line_and_does_not_stop_the_batch(graded):
    record = graded["records"]["malformed.ipynb"]
    assert record["status"] == "not graded" and record["points"] == 0
    assert record["notes"][0].startswith("not a readable notebook: it is not valid JSON")


def test_the_report_says_which_sandbox_the_kernels_ran_in(graded):
    sandboxes = {r["sandbox"] for r in graded["records"].values()}
    assert len(sandboxes) == 1 and sandboxes.pop().split(":")[0].split(" ")[0] in ("bubblewrap", "resource")
    assert "kernels run in a sandbox:" in graded["run"].stdout


def test_the_csv_has_points_and_feedback_per_task(graded):
    row = graded["rows"]["buggy.ipynb"]
    assert row["01.softmax points"] == "0" and "no max subtraction" in row["01.softmax feedback"]
    assert graded["rows"]["full_02_cross_modal_attention.ipynb"]["points"] == "14"
    assert graded["rows"]["malformed.ipynb"]["status"] == "not graded"


def test_hidden_tests_are_read_from_the_solution_by_task():
    tests = hidden_tests(nbformat.read(SOLUTION_01, as_version=4))
    assert set(tests) == {"01.softmax", "01.attention", "01.masked_attention"}
    assert "softmax must work on a single vector" in tests["01.softmax"]
    assert "### " not in "".join(tests.values())


@pytest.mark.parametrize("path", course_notebooks(ROOT / "solutions"), ids=lambda p: p.name)
def test_every_solutions_hidden_tests_belong_to_its_own_tasks(path):
    tests = hidden_tests(nbformat.read(path, as_version=4))
    assert tests and set(tests) <= {t.id for t in tasks_for_lesson(notebook_id(path))}


def _top_level_functions(nb) -> set:
    names = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return names


@pytest.mark.parametrize("path", course_notebooks(ROOT / "solutions"), ids=lambda p: p.name)
def test_hidden_tests_read_only_imports_their_own_names_and_the_learners_functions(path):
    """The judge runs hidden tests in its own process: a name they read is the solution's import, a name they
    assign, or a function (or class) of the learner's, called in the kernel. A variable of the notebook's
    (a demo block, a tensor) does not exist there and would fail every submission, a correct one too."""
    nb = nbformat.read(path, as_version=4)
    imported = set()
    for node in ast.parse(solution_imports(nb)).body:
        imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    functions = _top_level_functions(nb)
    for task_id, code in hidden_tests(nb).items():
        tree = ast.parse(code)
        assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        assigned |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in n.args.args}
        assigned |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        unknown = read - imported - assigned - functions - set(dir(builtins))
        assert not unknown, (f"{task_id}'s hidden tests read {sorted(unknown)}, which are neither imported by the "
                             f"solution, nor assigned in the tests, nor functions the learner writes")
