"""How the course names its notebooks: the one definition of a lesson id that every tool reads.

A lesson is ``NN_name.ipynb``, where ``NN`` is two digits and may take one letter (``02b_…``), so
that a lesson slotted in later keeps the file names, and so the links, of the lessons after it.
An optional appendix is ``A1_name.ipynb``. The same id starts the lesson's title (``# 02b · …``),
its exercise and solution notebooks' names, and its graded tasks' ids (``"02b.cross_entropy"``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Union

__all__ = ["LESSON_ID", "APPENDIX_ID", "notebook_id", "course_notebooks"]

#: A lesson's id: ``"01"``, ``"02b"``.
LESSON_ID = r"\d\d[a-z]?"
#: An appendix's id: ``"A1"``.
APPENDIX_ID = r"A\d"
_NOTEBOOK = re.compile(rf"({LESSON_ID}|{APPENDIX_ID})_[\w-]+\.ipynb")


def notebook_id(path: Union[str, Path]) -> Optional[str]:
    """The lesson or appendix id a notebook's file name starts with, or ``None`` for any other file."""
    match = _NOTEBOOK.fullmatch(Path(path).name)
    return match.group(1) if match else None


def course_notebooks(folder: Union[str, Path], appendices: bool = True) -> list[Path]:
    """The course's notebooks in ``folder``, in course order (``02`` < ``02b`` < ``03`` < ``A1``)."""
    found = [p for p in Path(folder).glob("*.ipynb") if notebook_id(p)]
    if not appendices:
        found = [p for p in found if re.fullmatch(LESSON_ID, notebook_id(p))]
    return sorted(found, key=lambda p: p.name)
