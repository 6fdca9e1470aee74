"""nbgrader's side of the course: imported by an ``nbgrader_config.py``, in the environment that has nbgrader.

.. code-block:: python

    # nbgrader_config.py, in the nbgrader course folder
    import sys
    sys.path.insert(0, "/path/to/crossmodal-edu")  # a clone of this repository: the package, nothing installed
    from crossmodal_edu.nbgrader_plugin import configure
    configure(get_config(), kernel_name="crossmodal-edu")  # the course's kernel, where torch and the package are

What it changes in nbgrader (0.9.6), and why:

* ``generate_assignment`` writes the course's stubs: nbgrader's ``ClearSolutions`` replaces every answer
  region by one fixed text, so a "fix this bug" task would lose its buggy code and a prediction would become
  a bare ``raise``. :class:`KeepStubs` replaces a region exactly as ``python -m crossmodal_edu.exercises
  build`` does (``### STUB`` lines, or ``# YOUR CODE HERE`` and ``raise NotImplementedError``), so the
  release's code cells are the committed exercise's. Everything else is nbgrader's own (locked test cells,
  checksums, the gradebook, hidden tests kept for autograde and cleared from the release);
* ``autograde`` and ``validate`` run the notebooks in the course's kernel (``kernel_name``: one whose Python
  has the course installed), with a cell time limit that a first ``import torch`` fits in.

Only ``nbformat`` and the course's notebook tools are imported (no torch, no numpy).
"""

from __future__ import annotations

from typing import Any, Optional

from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import ClearSolutions

from crossmodal_edu.exercises import BEGIN_SOLUTION, exercise_source

__all__ = ["KeepStubs", "configure"]


class KeepStubs(ClearSolutions):
    """nbgrader's ``ClearSolutions``, with each answer region replaced by the course's own stub."""

    def _replace_solution_region(self, cell: Any, language: str) -> bool:
        if cell.cell_type != "code" or BEGIN_SOLUTION not in cell.source:
            return super()._replace_solution_region(cell, language)
        cell.source = exercise_source(cell.source, f"cell {cell.get('id', '?')}")
        return True


def configure(c: Any, kernel_name: Optional[str] = None, timeout: int = 300) -> Any:
    """Set up nbgrader's config ``c`` (``get_config()``) for the course; returns it."""
    default = list(GenerateAssignment.class_traits()["preprocessors"].default())
    if ClearSolutions not in default:
        raise RuntimeError("this nbgrader's generate_assignment has no ClearSolutions step to replace; "
                           "the course was tested with nbgrader 0.9.6")
    c.GenerateAssignment.preprocessors = [KeepStubs if p is ClearSolutions else p for p in default]
    if kernel_name:
        c.Execute.kernel_name = kernel_name
    c.Execute.timeout = timeout
    return c
