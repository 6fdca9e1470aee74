r"""Generate the exercise notebooks from the solution notebooks, the single source of truth.

.. code-block:: bash

    python -m crossmodal_edu.exercises build   # solutions/NN_*.ipynb -> exercises/NN_*.ipynb
    python -m crossmodal_edu.exercises check   # exit 1 if exercises/ differs from what build writes

In a solution notebook, answers are marked with nbgrader's syntax:

.. code-block:: python

    def softmax(z, axis=-1):
        '''What comes in, what goes out, and the shapes.'''
        ### BEGIN SOLUTION
        z = z - z.max(axis=axis, keepdims=True)
        ...
        ### END SOLUTION

    check("01.softmax", softmax)
    ### BEGIN HIDDEN TESTS
    assert softmax(np.zeros(3)).shape == (3,)
    ### END HIDDEN TESTS

What the exercise gets instead:

* an answer region inside a function becomes ``# YOUR CODE HERE`` and
  ``raise NotImplementedError(...)`` at the region's indentation; the function's docstring (which
  the generator requires) says what comes in and goes out;
* an answer region with ``### STUB <code>`` lines becomes those lines instead (without the prefix,
  at the STUB line's indentation): the buggy code of a "fix this" task, or ``predicted_std = None``
  for a prediction. A region outside a function must have them: a bare ``raise`` there would stop
  the notebook;
* hidden-test regions are removed, markers included;
* outputs and execution counts are cleared; cell ids, cell metadata and the kernelspec are kept;
* the Colab badge and set-up cell (:mod:`crossmodal_edu.colab`) are carried over, the badge
  pointing at the exercise;
  the notebook's ``crossmodal_edu`` metadata says ``"role": "exercise"`` and where it came from.

A nested, unterminated or misspelt marker is an error naming the notebook, the cell and the line.

``build`` first stamps nbgrader's cell metadata into each solution (solution cells, autograded test cells
worth their task's points: :mod:`crossmodal_edu.nbgrader_cells`), rewriting the solution only when it
changes; the exercise inherits it. ``check`` also fails when a solution's metadata is missing or stale.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

import nbformat

from crossmodal_edu import colab
from crossmodal_edu.lessons import course_notebooks

__all__ = ["MarkerError", "exercise_source", "make_exercise", "build", "differences", "main"]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = "### STUB"
_MARKERS = {BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN}
# Anything that looks like a marker but is not exactly one: "## BEGIN SOLUTION", "### END HIDDEN TEST".
_LOOKS_LIKE_MARKER = re.compile(r"^\s*#+\s*(BEGIN|END)\s+(SOLUTION|HIDDEN)|^\s*#+\s*STUB\b", re.IGNORECASE)
_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")



class MarkerError(ValueError):
    """A solution notebook's answer or hidden-test markers are nested, unterminated or misspelt."""


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _enclosing_def(lines: list[str], begin: int) -> Optional[tuple[int, str]]:
    """The ``def`` that the line ``begin`` is inside of (by indentation): its line index and name."""
    depth = len(_indent(lines[begin]))
    for i in range(begin - 1, -1, -1):
        match = _DEF.match(lines[i])
        if match and len(match.group(1)) < depth:
            return i, match.group(2)
        if lines[i].strip() and len(_indent(lines[i])) < depth and not match:
            depth = len(_indent(lines[i]))  # a block header (if, for, class ...) between us and the def
    return None


def _has_docstring(lines: list[str], def_line: int, region: int) -> bool:
    return any(re.match(r"\s*[rRuU]?(\"\"\"|\'\'\')", line) for line in lines[def_line + 1: region])


def _stub(lines: list[str], begin: int, stub_lines: list[str], where: str) -> list[str]:
    if stub_lines:
        return stub_lines
    indent = _indent(lines[begin])
    enclosing = _enclosing_def(lines, begin)
    if enclosing is None:
        raise MarkerError(
            f"{where}, line {begin + 1}: an answer region outside a function needs `{STUB} <code>` "
            f"lines (e.g. `{STUB} predicted_std = None`): a bare `raise NotImplementedError` there "
            f"would stop the exercise notebook"
        )
    def_line, name = enclosing
    if not _has_docstring(lines, def_line, begin):
        raise MarkerError(
            f"{where}, line {begin + 1}: `{name}` has no docstring before its answer region; the "
            f"exercise's stub relies on it to say what comes in and what goes out (with shapes)"
        )
    return [f"{indent}# YOUR CODE HERE (what comes in and what must come out, with shapes: the docstring)",
            f'{indent}raise NotImplementedError("{name}() is not written yet")']


def exercise_source(source: str, where: str) -> str:
    """The exercise version of one code cell's source; ``where`` names the cell in errors."""
    lines = source.split("\n")
    out: list[str] = []
    region: Optional[tuple[str, int]] = None  # (kind, line index of its BEGIN)
    stub_lines: list[str] = []
    for i, line in enumerate(lines):
        marker = line.strip()
        if marker not in _MARKERS and not marker.startswith(STUB) and _LOOKS_LIKE_MARKER.match(line):
            raise MarkerError(f"{where}, line {i + 1}: {marker!r} looks like a marker but is not one of "
                              f"{sorted(_MARKERS | {STUB})}")
        if marker in (BEGIN_SOLUTION, BEGIN_HIDDEN):
            if region is not None:
                raise MarkerError(f"{where}, line {i + 1}: {marker} inside the region opened by "
                                  f"{region[0]} at line {region[1] + 1} (regions cannot be nested)")
            region, stub_lines = (marker, i), []
        elif marker in (END_SOLUTION, END_HIDDEN):
            expected = END_SOLUTION if region and region[0] == BEGIN_SOLUTION else END_HIDDEN
            if region is None or marker != expected:
                opened = f"the region opened by {region[0]} at line {region[1] + 1}" if region else "no open region"
                raise MarkerError(f"{where}, line {i + 1}: {marker} does not close anything ({opened})")
            if region[0] == BEGIN_SOLUTION:
                out += _stub(lines, region[1], stub_lines, where)
            region = None
        elif marker.startswith(STUB):
            if marker != STUB and not marker.startswith(STUB + " "):
                raise MarkerError(f"{where}, line {i + 1}: write `{STUB} <code>`, with a space: {marker!r}")
            if region is None or region[0] != BEGIN_SOLUTION:
                raise MarkerError(f"{where}, line {i + 1}: a {STUB} line outside an answer region")
            text = line.lstrip()[len(STUB) + 1:]
            stub_lines.append(_indent(line) + text if text.strip() else "")
        elif region is None:
            out.append(line)
    if region is not None:
        raise MarkerError(f"{where}, line {region[1] + 1}: {region[0]} is never closed "
                          f"(no {END_SOLUTION if region[0] == BEGIN_SOLUTION else END_HIDDEN})")
    return "\n".join(out)


def make_exercise(solution: nbformat.NotebookNode, name: str, source: str = "") -> nbformat.NotebookNode:
    """The exercise notebook for one solution notebook (``name`` is used in error messages,
    ``source`` is recorded in the metadata as where the exercise came from)."""
    nb = copy.deepcopy(solution)
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index} (id {cell.get('id', '?')})"
        if cell.cell_type == "code":
            cell.source = exercise_source(cell.source, where)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif any(_LOOKS_LIKE_MARKER.match(line) for line in cell.source.split("\n")):
            raise MarkerError(f"{where}: markers belong in code cells, not in a {cell.cell_type} cell")
    meta = dict(nb.metadata.get("crossmodal_edu", {}))
    meta.update(role="exercise", generated_from=source or name)
    nb.metadata["crossmodal_edu"] = meta
    nbformat.validate(nb)
    return nb


def _solutions(solutions_dir: Path) -> list[Path]:
    return course_notebooks(solutions_dir)


def _stamped(path: Path) -> tuple[nbformat.NotebookNode, str]:
    """The solution at ``path`` with its nbgrader metadata as the task specs give it, and its file text."""
    from crossmodal_edu.grading.tasks import tasks_for_lesson  # the specs import torch: only when building
    from crossmodal_edu.lessons import notebook_id
    from crossmodal_edu.nbgrader_cells import stamp

    points = {t.id: t.points for t in tasks_for_lesson(notebook_id(path))}
    solution = stamp(nbformat.read(path, as_version=4), points, str(path))
    return solution, nbformat.writes(solution) + "\n"


def build(solutions_dir: Path, exercises_dir: Path, stamp_solutions: bool = True) -> list[Path]:
    """Write ``exercises_dir/NN_*.ipynb`` for every ``solutions_dir/NN_*.ipynb``; return the paths.
    With ``stamp_solutions``, a solution whose nbgrader metadata is missing or stale is rewritten first."""
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    exercises_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in _solutions(solutions_dir):
        solution, text = _stamped(path)
        if stamp_solutions and text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
        exercise = make_exercise(solution, str(path), f"{solutions_dir.name}/{path.name}")
        if any(colab.is_generated(cell) for cell in exercise.cells):
            colab.apply(exercise, f"{exercises_dir.name}/{path.name}")  # the badge opens the exercise
        target = exercises_dir / path.name
        target.write_text(nbformat.writes(exercise) + "\n", encoding="utf-8")
        written.append(target)
    return written


def differences(solutions_dir: Path, exercises_dir: Path) -> list[str]:
    """What differs between ``exercises_dir`` (and the solutions' nbgrader metadata) and what :func:`build`
    would write, one line each."""
    problems = [f"{path}: its nbgrader metadata is missing or stale" for path in _solutions(Path(solutions_dir))
                if _stamped(path)[1] != path.read_text(encoding="utf-8")]
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p.read_bytes()
                 for p in build(solutions_dir, Path(tmp) / Path(exercises_dir).name, stamp_solutions=False)}
    committed = {p.name: p.read_bytes() for p in course_notebooks(exercises_dir)}
    problems += [f"{name}: missing from {exercises_dir}" for name in sorted(fresh.keys() - committed.keys())]
    problems += [f"{name}: in {exercises_dir} but no solution notebook generates it"
                 for name in sorted(committed.keys() - fresh.keys())]
    problems += [f"{name}: differs from what its solution generates"
                 for name in sorted(fresh.keys() & committed.keys()) if fresh[name] != committed[name]]
    return problems


def _default_root() -> Path:
    """The repository this package was installed from (editable), else the current folder."""
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "solutions").is_dir() else Path.cwd()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossmodal_edu.exercises",
                                     description="Generate exercises/ from solutions/.")
    parser.add_argument("command", choices=["build", "check"],
                        help="build: write the exercises; check: exit 1 if they are out of date")
    parser.add_argument("--solutions", type=Path, default=None, help="default: <repo>/solutions")
    parser.add_argument("--exercises", type=Path, default=None, help="default: <repo>/exercises")
    args = parser.parse_args(argv)
    root = _default_root()
    solutions = args.solutions or root / "solutions"
    exercises = args.exercises or root / "exercises"
    try:
        if args.command == "build":
            for path in build(solutions, exercises):
                print(f"wrote {path}")
            return 0
        problems = differences(solutions, exercises)
    except ValueError as error:  # a MarkerError, or a check cell nbgrader could not score
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    if problems:
        print("run `python -m crossmodal_edu.exercises build` and commit exercises/", file=sys.stderr)
        return 1
    print(f"{exercises} is up to date with {solutions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
