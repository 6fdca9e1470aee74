"""The catalogue: every graded task of every lesson, one module per lesson.

A module ``lessonNN.py`` (``lesson02b.py`` for lesson 02b) here defines ``TASKS``, a tuple of task specs
(:mod:`crossmodal_edu.grading.spec`) whose ids start with ``"NN."``, in the order the exercise
notebook asks them. Adding a lesson's exercises is adding such a module (and its solution notebook).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import lru_cache

from crossmodal_edu.grading.spec import Task
from crossmodal_edu.lessons import LESSON_ID

__all__ = ["all_tasks", "get_task", "tasks_for_lesson", "lessons"]


@lru_cache(maxsize=None)
def _catalogue() -> dict[str, tuple[Task, ...]]:
    lessons: dict[str, tuple[Task, ...]] = {}
    for info in pkgutil.iter_modules(__path__):
        match = re.fullmatch(rf"lesson({LESSON_ID})", info.name)
        if not match:
            continue
        lesson = match.group(1)
        tasks = tuple(importlib.import_module(f"{__name__}.{info.name}").TASKS)
        for task in tasks:
            if not task.id.startswith(f"{lesson}."):
                raise ValueError(f"task {task.id!r} is in {info.name}.py, so its id must start with '{lesson}.'")
        lessons[lesson] = tasks
    return dict(sorted(lessons.items()))


def lessons() -> list[str]:
    """The lessons that have exercises: ``["01", "02", ...]``."""
    return list(_catalogue())


def tasks_for_lesson(lesson: str) -> tuple[Task, ...]:
    lesson = str(lesson).zfill(2)
    try:
        return _catalogue()[lesson]
    except KeyError:
        raise ValueError(f"no exercises for lesson {lesson!r}; lessons with exercises: {lessons()}") from None


def all_tasks() -> list[Task]:
    return [task for tasks in _catalogue().values() for task in tasks]


def get_task(task_id: str) -> Task:
    """The task with this id, e.g. ``"01.softmax"``; a ``ValueError`` lists the lesson's tasks if unknown."""
    for task in all_tasks():
        if task.id == task_id:
            return task
    lesson = str(task_id).split(".")[0]
    known = [t.id for t in all_tasks() if t.id.startswith(f"{lesson}.")] or [t.id for t in all_tasks()]
    raise ValueError(f"unknown task {task_id!r}; known tasks: {', '.join(known)}")
