"""The judge of the class grader: re-check one task of a submission, from outside its kernel.

``python -m crossmodal_edu.grade`` runs a submission in a sandboxed kernel, then calls
:func:`grade_task` once per task, in the grader's own (trusted) process. The learner's answer stays in the
kernel: the judge holds a :class:`~crossmodal_edu.grading.remote.RemoteFunction` for it (or, for a
prediction, the value, sent as plain data) and runs here everything that decides: the references, the
comparisons, the catalogue of mistakes, the hidden tests and the points, which come from the task spec.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import traceback
from typing import Any, Optional

from crossmodal_edu.grading import wire
from crossmodal_edu.grading.judge import judge
from crossmodal_edu.grading.remote import Channel, KernelLost, RemoteFunction
from crossmodal_edu.grading.result import FAILED, Result
from crossmodal_edu.grading.spec import FunctionTask, Task

__all__ = ["grade_task", "hidden_namespace", "MISSING"]

MISSING = "missing"  # the notebook defines nothing under the task's name


def _names(code: str) -> set[str]:
    """The global names a piece of code reads."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            names.add(node.id)
    return names


def hidden_namespace(code: str, imports: str, channel: Channel) -> dict[str, Any]:
    """Where the instructor's hidden tests run (here, in the judge): the solution notebook's imports, and
    for every other name the tests read, the learner's function of that name, called in their kernel."""
    namespace: dict[str, Any] = {"__name__": "hidden_tests"}
    if imports.strip():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(imports, "<imports of the solution>", "exec"), namespace)
    for name in _names(code):
        if name not in namespace and not hasattr(builtins, name):
            namespace[name] = RemoteFunction(channel, name=name)
    return namespace


def _hidden_failure(task_id: str, code: str, namespace: dict[str, Any]) -> Optional[str]:
    """Run the hidden tests; ``None`` if they pass, else what failed."""
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


def grade_task(task: Task, channel: Channel, seeds: list[int], hidden: str = "",
               imports: str = "") -> dict[str, Any]:
    """Check ``task`` on every seed, then its hidden tests, against the answer in the kernel behind
    ``channel``; the record of the class grader's report. Raises ``KernelTimeout`` or ``KernelLost``
    when the kernel stops answering (the caller reports the task as timed out, or not graded)."""
    record: dict[str, Any] = {"task": task.id, "title": task.title, "points": 0,
                              "max_points": task.points, "mistake": None, "seeds": list(seeds)}
    found = channel({"op": "find", "task": task.id})
    if not found.get("found"):
        record.update(status=MISSING, feedback=f"· {task.id} · {task.title}: missing: the notebook defines "
                                               f"no `{task.name}` (renamed or deleted?) (0/{task.points} points)")
        return record
    if found.get("callable"):
        answer: Any = RemoteFunction(channel, task_id=task.id)
    else:
        try:
            answer = wire.decode(found.get("value"))
        except (wire.WireError, ValueError, TypeError) as error:
            raise KernelLost(f"the kernel sent an answer that is not plain data ({error})") from None
    runs = seeds if isinstance(task, FunctionTask) else [None]
    results = [judge(task, answer, seed) for seed in runs]
    result: Result = next((r for r in results if not r.passed), results[0])
    if result.passed and hidden.strip():
        failure = _hidden_failure(task.id, hidden, hidden_namespace(hidden, imports, channel))
        if failure:
            result = Result(task.id, task.title, FAILED, 0, task.points, "failed a hidden test",
                            [f"Hidden test: {failure}"])
    copied = found.get("copied") or getattr(answer, "copied", None)
    record.update(status=result.status, points=task.points if result.passed else 0, mistake=result.mistake,
                  feedback=result.text())
    if copied:
        record["copied"] = str(copied)[:300]
    return record
