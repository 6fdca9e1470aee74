"""nbgrader's cell metadata for a solution notebook, derived from the task specs (one source of truth).

``python -m crossmodal_edu.exercises build`` stamps it into ``solutions/`` and, through them, into
``exercises/``; ``check`` fails when it is missing or stale. nbgrader (``generate_assignment``,
``autograde``) then reads the notebooks as its own:

* a code cell with an answer region (``### BEGIN SOLUTION``) is a **solution cell**, ``answer-<cell id>``;
* a code cell that runs ``check("NN.name", ...)`` is an **autograded test cell**, locked, named after its
  task (``NN-name``), worth the task's points from its spec, so the cells add up to the course's points;
* every other cell carries no nbgrader metadata.

A test cell scores in nbgrader when it runs without an error; :func:`crossmodal_edu.grading.check` raises
under nbgrader's grading runs when its task does not pass (:mod:`crossmodal_edu.grading.session`).
"""

from __future__ import annotations

import copy
import re
from typing import Mapping

import nbformat

from crossmodal_edu.lessons import LESSON_ID

__all__ = ["SCHEMA_VERSION", "grade_id", "cell_metadata", "stamp"]

SCHEMA_VERSION = 3  # nbgrader's cell metadata schema (0.9)
BEGIN_SOLUTION = "### BEGIN SOLUTION"
_CHECK = re.compile(rf"""^check\(\s*["']({LESSON_ID}\.\w+)["']""", re.MULTILINE)


def grade_id(task_id: str) -> str:
    """nbgrader's name for a task's test cell: ``"06.decoder_block"`` -> ``"06-decoder_block"`` (no dots)."""
    return task_id.replace(".", "-")


def cell_metadata(cell: nbformat.NotebookNode, points: Mapping[str, int], where: str) -> dict | None:
    """The ``nbgrader`` metadata ``cell`` must carry (``None``: none); ``points`` maps task ids to points."""
    if cell.cell_type != "code":
        return None
    checked = _CHECK.findall(cell.source)
    if BEGIN_SOLUTION in cell.source:
        if checked:
            raise ValueError(f"{where}: an answer region and a check in one cell; nbgrader needs the answer "
                             f"(a solution cell) and the check (a test cell) in cells of their own")
        return {"grade": False, "grade_id": f"answer-{cell.id}", "locked": False,
                "schema_version": SCHEMA_VERSION, "solution": True, "task": False}
    if not checked:
        return None
    if len(checked) > 1:
        raise ValueError(f"{where}: checks {checked} in one cell; nbgrader scores a test cell as a whole, "
                         f"so each task's check needs a cell of its own")
    if checked[0] not in points:
        raise ValueError(f"{where}: checks {checked[0]!r}, which is not a task of this lesson "
                         f"(its tasks: {sorted(points)})")
    return {"grade": True, "grade_id": grade_id(checked[0]), "locked": True, "points": int(points[checked[0]]),
            "schema_version": SCHEMA_VERSION, "solution": False, "task": False}


def stamp(nb: nbformat.NotebookNode, points: Mapping[str, int], name: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose every cell carries the nbgrader metadata :func:`cell_metadata` gives it
    (stale metadata replaced, metadata on cells that need none removed)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        wanted = cell_metadata(cell, points, f"{name}, cell {index} (id {cell.get('id', '?')})")
        if wanted is None:
            cell.metadata.pop("nbgrader", None)
        else:
            cell.metadata["nbgrader"] = wanted
    return nb
