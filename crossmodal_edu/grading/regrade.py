"""The kernel side of the class grader: re-check one task in the learner's own kernel.

``python -m crossmodal_edu.grade`` runs a submission, then one cell per task that calls
:func:`grade_task`. It finds the learner's answer (the one they last passed to ``check``, else the
name the exercise asked for), checks it on the grader's seeds, runs the instructor's hidden tests,
and appends one JSON line to a file the grader reads back.
"""

from __future__ import annotations

import contextlib
import io
import json
import traceback
from typing import Any, Optional

from crossmodal_edu.grading.judge import judge
from crossmodal_edu.grading.result import FAILED, Result
from crossmodal_edu.grading.session import checked_answer
from crossmodal_edu.grading.spec import FunctionTask
from crossmodal_edu.grading.tasks import get_task

__all__ = ["grade_task", "MISSING"]

MISSING = "missing"  # the notebook defines nothing under the task's name


def _user_namespace() -> dict[str, Any]:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            return shell.user_ns
    except ImportError:
        pass
    import __main__

    return vars(__main__)


def _hidden_failure(task_id: str, code: str, namespace: dict[str, Any]) -> Optional[str]:
    """Run the hidden tests in the learner's namespace; ``None`` if they pass, else what failed."""
    filename = f"<hidden tests of {task_id}>"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(code, filename, "exec"), namespace)
    except Exception as error:
        frames = list(traceback.walk_tb(error.__traceback__))
        lines = [n for f, n in frames if f.f_code.co_filename == filename]
        line = code.splitlines()[lines[-1] - 1].strip() if lines else ""
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raised_by_the_test = bool(frames) and frames[-1][0].f_code.co_filename == filename
        if isinstance(error, AssertionError) and raised_by_the_test:
            return message or f"`{line}` does not hold"
        return f"`{line}` raised {type(error).__name__}" + (f": {message}" if message else "")
    return None


def grade_task(task_id: str, seeds: list[int], hidden: str, out: str) -> None:
    """Check task ``task_id`` on every seed, then its hidden tests; append the verdict to ``out``."""
    task = get_task(task_id)
    namespace = _user_namespace()
    found, answer = checked_answer(task_id)
    if not found and task.name in namespace:
        found, answer = True, namespace[task.name]
    record: dict[str, Any] = {"task": task.id, "title": task.title, "points": 0,
                              "max_points": task.points, "mistake": None, "seeds": list(seeds)}
    if not found:
        record.update(status=MISSING, feedback=f"· {task.id} · {task.title}: missing: the notebook defines "
                                               f"no `{task.name}` (renamed or deleted?) (0/{task.points} points)")
    else:
        runs = seeds if isinstance(task, FunctionTask) else [None]
        results = [judge(task, answer, seed) for seed in runs]
        result: Result = next((r for r in results if not r.passed), results[0])
        if result.passed and hidden.strip():
            failure = _hidden_failure(task.id, hidden, namespace)
            if failure:
                result = Result(task.id, task.title, FAILED, 0, task.points, "failed a hidden test",
                                [f"Hidden test: {failure}"])
        record.update(status=result.status, points=result.points, mistake=result.mistake,
                      feedback=result.text())
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(record["feedback"].splitlines()[0])

