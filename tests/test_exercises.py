"""The exercise notebooks are generated from the solutions, and both are what a learner needs.

nbval (same pytest command) runs solutions/ and exercises/: every cell of both must run without
error, and each solution's scoreboard cell (# NBVAL_CHECK_OUTPUT) must reproduce its full marks.
"""
import contextlib
import io
import re
from pathlib import Path

import nbformat
import pytest

from crossmodal_edu import exercises
from crossmodal_edu.colab import is_generated
from crossmodal_edu.exercises import MarkerError, differences, exercise_source, make_exercise
from crossmodal_edu.grading import judge, lessons, session, tasks_for_lesson
from crossmodal_edu.grading.result import NOT_ATTEMPTED, PASSED
from crossmodal_edu.grading.spec import FunctionTask
from crossmodal_edu.lessons import course_notebooks, notebook_id

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = course_notebooks(ROOT / "solutions")
EXERCISES = course_notebooks(ROOT / "exercises")


def _notebook(*sources, markdown=()):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["crossmodal_edu"] = {"lesson": "99", "role": "solution"}
    nb.cells = [nbformat.v4.new_markdown_cell(m) for m in markdown]
    for i, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{i}"
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="old output\n")]
        nb.cells.append(cell)
    return nb


FUNCTION = '''def f(x):
    """Double x. x: (n,) -> (n,)."""
    y = x
    ### BEGIN SOLUTION
    y = 2 * x
    return y
    ### END SOLUTION'''


# --- the generator ------------------------------------------------------------------------------

def test_an_answer_region_in_a_function_becomes_an_indented_stub_that_raises():
    stub = exercise_source(FUNCTION, "nb, cell 0")
    assert stub == '''def f(x):
    """Double x. x: (n,) -> (n,)."""
    y = x
    # YOUR CODE HERE (what comes in and what must come out, with shapes: the docstring)
    raise NotImplementedError("f() is not written yet")'''


def test_an_answer_region_inside_a_nested_block_keeps_its_deeper_indentation():
    region = "    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION"
    nested = "    if True:\n        ### BEGIN SOLUTION\n        y = 2 * x\n        ### END SOLUTION\n    return y"
    stub = exercise_source(FUNCTION.replace(region, nested), "nb")
    assert '        raise NotImplementedError("f() is not written yet")\n    return y' in stub


def test_stub_lines_replace_the_region_for_fix_this_and_prediction_tasks():
    source = "### BEGIN SOLUTION\n### STUB guess = None  # a number\nguess = 8\n### END SOLUTION"
    assert exercise_source(source, "nb") == "guess = None  # a number"
    source = FUNCTION.replace("    y = 2 * x\n    return y", "    ### STUB return x + x + 1\n    return 2 * x")
    assert exercise_source(source, "nb").endswith('"""\n    y = x\n    return x + x + 1')


def test_hidden_tests_are_removed_with_their_markers():
    source = 'check("99.f", f)\n### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS\nprint("done")'
    assert exercise_source(source, "nb") == 'check("99.f", f)\nprint("done")'


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1\n### BEGIN SOLUTION\n### END SOLUTION", "cannot be nested"),
    ("### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS\n### END SOLUTION", "cannot be nested"),
    ("def f():\n    '''doc'''\n    ### BEGIN SOLUTION\n    return 1", "is never closed"),
    ("### BEGIN HIDDEN TESTS\nassert True", "is never closed"),
    ("x = 1\n### END SOLUTION", "does not close anything"),
    ("### BEGIN SOLUTION\n### STUB x = None\n### END HIDDEN TESTS", "does not close anything"),
    ("### STUB x = None", "outside an answer region"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "needs `### STUB <code>` lines"),
    ("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION", "has no docstring"),
    ("## BEGIN SOLUTION\nx = 1", "looks like a marker"),
    ("### END HIDDEN TEST\n", "looks like a marker"),
    ("### BEGIN SOLUTION\n###STUB x = None\n### END SOLUTION", "looks like a marker"),
])
def test_a_malformed_region_is_an_error_naming_notebook_cell_and_line(source, message):
    nb = _notebook("print(1)", source)
    with pytest.raises(MarkerError, match=re.escape(message)) as error:
        make_exercise(nb, "solutions/99_test.ipynb")
    assert "solutions/99_test.ipynb, cell 1 (id cell-1), line" in str(error.value)


def test_markers_in_a_markdown_cell_are_an_error():
    nb = _notebook("print(1)", markdown=["Text\n### BEGIN SOLUTION\nanswer\n### END SOLUTION"])
    with pytest.raises(MarkerError, match="cell 0 .*markers belong in code cells"):
        make_exercise(nb, "nb")


def test_the_exercise_clears_outputs_and_keeps_ids_metadata_and_kernelspec():
    nb = _notebook("import numpy as np", FUNCTION)
    nb.cells[1].metadata["tags"] = ["keep-me"]
    exercise = make_exercise(nb, "solutions/99_test.ipynb", "solutions/99_test.ipynb")
    assert [c.id for c in exercise.cells] == ["cell-0", "cell-1"]
    assert all(c.outputs == [] and c.execution_count is None for c in exercise.cells)
    assert exercise.cells[1].metadata["tags"] == ["keep-me"]
    assert exercise.metadata["kernelspec"] == nb.metadata["kernelspec"]
    assert exercise.metadata["crossmodal_edu"] == {"lesson": "99", "role": "exercise",
                                                   "generated_from": "solutions/99_test.ipynb"}
    assert nb.cells[1].outputs, "the solution itself is left alone"


def test_the_committed_exercises_are_exactly_what_the_generator_writes():
    problems = differences(ROOT / "solutions", ROOT / "exercises")
    assert not problems, f"{problems}: run `python -m crossmodal_edu.exercises build` and commit exercises/"


def test_the_check_command_reports_drift(tmp_path, capsys):
    exercises.build(ROOT / "solutions", tmp_path)
    assert exercises.main(["check", "--solutions", str(ROOT / "solutions"), "--exercises", str(tmp_path)]) == 0
    target = tmp_path / SOLUTIONS[0].name
    target.write_text(target.read_text().replace("YOUR CODE HERE", "my own edit"))
    assert exercises.main(["check", "--solutions", str(ROOT / "solutions"), "--exercises", str(tmp_path)]) == 1
    assert f"{SOLUTIONS[0].name}: differs from what its solution generates" in capsys.readouterr().out


# --- the committed notebooks --------------------------------------------------------------------

def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_every_lesson_with_exercises_has_a_solution_and_an_exercise_named_after_it():
    lesson_names = {p.name for p in course_notebooks(ROOT / "notebooks")}
    assert [notebook_id(p) for p in SOLUTIONS] == lessons()
    assert [p.name for p in EXERCISES] == [p.name for p in SOLUTIONS]
    for path in SOLUTIONS:
        assert path.name in lesson_names, f"{path.name} is not named after a lesson in notebooks/"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_a_solution_checks_each_task_of_its_lesson_once_in_order_and_ends_with_the_scoreboard(path):
    nb = nbformat.read(path, as_version=4)
    lesson = notebook_id(path)
    assert nb.metadata["crossmodal_edu"] == {"lesson": lesson, "role": "solution"}
    first = next(c for c in nb.cells if not is_generated(c))  # below the Colab badge and set-up cell
    assert re.match(rf"# Exercises {lesson} · ", first.source)
    assert "How the checks work" in first.source
    checked = [m for c in _code(nb) for m in re.findall(r'^check\("([\w.]+)"', c.source, re.MULTILINE)]
    assert checked == [t.id for t in tasks_for_lesson(lesson)]
    assert nb.cells[-1].source == f'# NBVAL_CHECK_OUTPUT\nscoreboard("{lesson}")'


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_a_solution_is_committed_executed_with_full_marks_and_no_errors(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in _code(nb) if c.source.strip()]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "re-execute it in order"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    board = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[-1].outputs)
    total = sum(t.points for t in tasks_for_lesson(notebook_id(path)))
    assert f"Total: {total}/{total} points" in board


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_an_exercise_holds_no_answers_no_hidden_tests_and_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "### BEGIN" not in text and "### END" not in text and "### STUB" not in text
    assert all(c.outputs == [] and c.execution_count is None for c in _code(nb))


def _run_in_process(path):
    """Run a notebook's code cells here (no kernel) and return their namespace and printed output."""
    nb = nbformat.read(path, as_version=4)
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for cell in _code(nb):
            exec(compile(cell.source, f"{path.name}:{cell.id}", "exec"), namespace)
    return namespace, printed.getvalue()


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_every_solution_answer_passes_on_many_seeds(path, monkeypatch):
    monkeypatch.setattr(session, "_SESSION", {})
    namespace, _ = _run_in_process(path)
    for task in tasks_for_lesson(notebook_id(path)):
        seeds = range(20) if isinstance(task, FunctionTask) else [None]
        for seed in seeds:
            result = judge(task, namespace[task.name], seed)
            assert result.status == PASSED, result.text()


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_every_exercise_task_is_not_attempted_and_scores_zero(path, monkeypatch):
    monkeypatch.setattr(session, "_SESSION", {})
    namespace, printed = _run_in_process(path)
    tasks = tasks_for_lesson(notebook_id(path))
    for task in tasks:
        assert session.latest_result(task.id).status == NOT_ATTEMPTED
    assert f"Total: 0/{sum(t.points for t in tasks)} points" in printed


def _readme_rows():
    """exercises/README.md's table: {lesson: (linked notebook, number of tasks listed, points)}."""
    rows = {}
    for line in (ROOT / "exercises" / "README.md").read_text().splitlines():
        match = re.match(r"\|\s*\[(\w+) · [^\]]+\]\(([\w.-]+)\)\s*\|[^|]*\|([^|]+)\|\s*(\d+)\s*\|$", line)
        if match:
            lesson, link, tasks, points = match.groups()
            rows[lesson] = (link, len(tasks.split(" · ")), int(points))
    return rows


def test_the_exercises_readme_lists_every_lesson_with_its_tasks_and_points_from_the_specs():
    rows = _readme_rows()
    assert list(rows) == lessons(), "one row per lesson with exercises, in course order"
    for path in EXERCISES:
        lesson = notebook_id(path)
        tasks = tasks_for_lesson(lesson)
        expected = (path.name, len(tasks), sum(t.points for t in tasks))
        assert rows[lesson] == expected, (f"exercises/README.md's row {lesson} says (notebook, tasks, points) = "
                                          f"{rows[lesson]}, the task specs say {expected}")


# --- nbgrader's cell metadata, stamped by the build from the task specs -----------------------------

@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_the_solution_carries_nbgrader_metadata_whose_points_are_the_specs(path):
    from crossmodal_edu.nbgrader_cells import grade_id

    nb = nbformat.read(path, as_version=4)
    tasks = tasks_for_lesson(notebook_id(path))
    marked = [c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata]
    tests = {m["grade_id"]: m["points"] for m in marked if m["grade"]}
    assert tests == {grade_id(t.id): t.points for t in tasks}
    assert sum(tests.values()) == sum(t.points for t in tasks)
    answers = [c for c in _code(nb) if "### BEGIN SOLUTION" in c.source]
    assert [c.metadata["nbgrader"]["solution"] for c in answers] == [True] * len(answers)
    assert all(m["schema_version"] == 3 and not (m["grade"] and m["solution"]) for m in marked)
    ids = [m["grade_id"] for m in marked]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[\w-]+", i) for i in ids)


def test_stale_nbgrader_metadata_is_reported_by_check_and_fixed_by_build(tmp_path, capsys):
    solutions, built = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    target = solutions / SOLUTIONS[0].name
    nb = nbformat.read(SOLUTIONS[0], as_version=4)
    graded = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    graded.metadata["nbgrader"]["points"] = 99
    target.write_text(nbformat.writes(nb) + "\n")
    exercises.build(solutions, built, stamp_solutions=False)
    assert exercises.main(["check", "--solutions", str(solutions), "--exercises", str(built)]) == 1
    assert "its nbgrader metadata is missing or stale" in capsys.readouterr().out
    exercises.build(solutions, built)
    assert target.read_bytes() == SOLUTIONS[0].read_bytes()
    assert exercises.main(["check", "--solutions", str(solutions), "--exercises", str(built)]) == 0


def test_an_answer_and_a_check_in_one_cell_cannot_be_scored_by_nbgrader():
    from crossmodal_edu.nbgrader_cells import stamp

    nb = _notebook(FUNCTION + '\ncheck("99.f", f)')
    with pytest.raises(ValueError, match="cells of their own"):
        stamp(nb, {"99.f": 2}, "nb")
    with pytest.raises(ValueError, match="not a task of this lesson"):
        stamp(_notebook('check("99.g", g)'), {"99.f": 2}, "nb")
