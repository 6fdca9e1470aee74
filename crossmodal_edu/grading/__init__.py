"""Graded exercises: checks that name the mistake, for the exercise notebooks in ``exercises/``.

In a notebook::

    from crossmodal_edu.grading import check, scoreboard
    check("01.softmax", softmax)    # fresh random inputs; names the mistake if there is one
    scoreboard("01")                # the points of every task of the lesson

Modules, one idea each:

- :mod:`~crossmodal_edu.grading.spec`: what a task is (cases, reference, properties, mistakes);
- :mod:`~crossmodal_edu.grading.tasks`: the catalogue, one module of task specs per lesson;
- :mod:`~crossmodal_edu.grading.judge`: run an answer, compare, diagnose;
- :mod:`~crossmodal_edu.grading.result`: the result and the scoreboard, as HTML and text;
- :mod:`~crossmodal_edu.grading.session`: ``check`` and ``scoreboard``, and what this kernel checked;
- the class grader (``python -m crossmodal_edu.grade``), in two rooms:
  :mod:`~crossmodal_edu.grading.sandbox` confines each learner's kernel, where
  :mod:`~crossmodal_edu.grading.agent` only evaluates their functions;
  :mod:`~crossmodal_edu.grading.regrade` judges them from the grader's process, through
  :mod:`~crossmodal_edu.grading.remote` handles, with :mod:`~crossmodal_edu.grading.wire` (plain data) between;
  :mod:`~crossmodal_edu.grading.runner` runs the notebooks and the requests.

The exercise notebooks are generated from ``solutions/`` by ``python -m crossmodal_edu.exercises build``.
"""

from crossmodal_edu.grading.judge import judge
from crossmodal_edu.grading.result import Result, Scoreboard
from crossmodal_edu.grading.session import build_scoreboard, check, latest_result, scoreboard
from crossmodal_edu.grading.tasks import all_tasks, get_task, lessons, tasks_for_lesson

__all__ = [
    "check",
    "scoreboard",
    "judge",
    "latest_result",
    "build_scoreboard",
    "Result",
    "Scoreboard",
    "get_task",
    "tasks_for_lesson",
    "all_tasks",
    "lessons",
]
