"""The one-line checks a learner runs in a notebook, and the scoreboard at its end.

.. code-block:: python

    from crossmodal_edu.grading import check, scoreboard
    check("01.softmax", softmax)          # after each task
    check("01.softmax", softmax, seed=4821)   # reproduce a check that failed
    scoreboard("01")                      # at the end: the points of every task of lesson 01

This kernel remembers the latest result of every task (and what was checked), so the scoreboard can
sum them and the class grader can re-check the very function the learner checked.

These checks run in the learner's own kernel, with no sandbox (on Colab as locally): instant feedback,
not a security boundary, since a learner can change what they say. The class grader
(:mod:`crossmodal_edu.grade`) judges from its own process instead, and only asks the kernel to evaluate.

A check never raises for a learner. Under nbgrader's ``autograde`` or ``validate`` (which set
``NBGRADER_EXECUTION`` in the kernel's environment), a check that does not pass shows its feedback and then
raises :class:`CheckFailed`: nbgrader scores a test cell by whether it raised.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from crossmodal_edu.grading.judge import judge
from crossmodal_edu.grading.result import Result, Scoreboard
from crossmodal_edu.grading.tasks import get_task, tasks_for_lesson

__all__ = ["check", "scoreboard", "build_scoreboard", "checked_answer", "latest_result", "CheckFailed"]

#: The values of ``NBGRADER_EXECUTION`` under which a failing check raises: nbgrader's grading runs.
GRADING_RUNS = ("autograde", "validate")

# task id -> (the answer last checked, its result). Module state: one notebook, one kernel.
_SESSION: dict[str, tuple[Any, Result]] = {}


class CheckFailed(AssertionError):
    """A task's check did not pass, in a grading run of nbgrader (its test cell then scores 0)."""


def _grading_run() -> bool:
    return os.environ.get("NBGRADER_EXECUTION", "") in GRADING_RUNS


def _show(thing: Any) -> None:
    """Display as HTML (plain-text fallback) in a notebook; print in a terminal."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(thing)
            return
    except ImportError:
        pass
    print(thing.text())


def check(task_id: str, answer: Any, seed: Optional[int] = None) -> None:
    """Check ``answer`` for task ``task_id`` on fresh random inputs and show what is right or wrong.

    ``answer`` is the learner's function (or, for a "predict, then run" question, the predicted
    value). Every call draws new inputs from a new seed (shown when the check fails); pass
    ``seed=`` to repeat a check exactly. Never raises because of the learner's code: a stub is "not attempted", an
    exception is reported with its message and line. Shows the result and returns nothing (so a
    cell that ends in ``check(...)`` shows it once); :func:`latest_result` gives it as an object.
    Under nbgrader's autograde or validate, a result that is not a pass is then raised as :class:`CheckFailed`.
    """
    task = get_task(task_id)
    result = judge(task, answer, seed)
    _SESSION[task.id] = (answer, result)
    _show(result)
    if not result.passed and _grading_run():
        raise CheckFailed(f"{task.id} did not pass: {result.status} (0/{task.points} points)")


def build_scoreboard(lesson: str) -> Scoreboard:
    """The latest result of every task of ``lesson`` ("01") checked in this kernel."""
    rows = [(t.id, t.title, t.points, _SESSION.get(t.id, (None, None))[1]) for t in tasks_for_lesson(lesson)]
    return Scoreboard(lesson=lesson, rows=rows)


def scoreboard(lesson: str) -> None:
    """Show the points of every task of ``lesson`` ("01") checked in this kernel, and their sum."""
    _show(build_scoreboard(lesson))


def checked_answer(task_id: str) -> tuple[bool, Any]:
    """``(True, answer)`` if ``task_id`` was checked in this kernel, else ``(False, None)``."""
    if task_id in _SESSION:
        return True, _SESSION[task_id][0]
    return False, None


def latest_result(task_id: str) -> Optional[Result]:
    return _SESSION.get(task_id, (None, None))[1]
