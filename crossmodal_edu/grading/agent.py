"""The kernel's side of the class grader: evaluate the learner's functions, answer in plain data.

The class grader (:mod:`crossmodal_edu.grade`) runs a submission in a sandboxed kernel, then sends it
requests, each as one cell ``serve(request, reply_file)``. This module only *evaluates*: it finds the
learner's answer to a task, calls it (through the task's harness, if the task has one) on the inputs
the judge sent, and writes what came back, as :mod:`~crossmodal_edu.grading.wire` plain data, to the
reply file. It decides nothing: references, comparisons, mistakes, hidden tests and points live in the
judge (:mod:`crossmodal_edu.grading.regrade`), in another process the kernel cannot reach.

Everything here runs beside the learner's code and may be changed by it; the judge therefore treats
every reply as a claim about the learner's answer, never as a verdict.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from crossmodal_edu.grading import wire
from crossmodal_edu.grading.spec import in_their_names

__all__ = ["serve"]

_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep
_GRADING = str(Path(__file__).resolve().parent) + os.sep
_GRAPHS: dict[str, tuple[list[Any], list[Any]]] = {}  # handle -> (inputs that need a gradient, outputs)


def _namespace() -> dict[str, Any]:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            return shell.user_ns
    except ImportError:
        pass
    import __main__

    return vars(__main__)


def _answer(task) -> tuple[bool, Any]:
    """The learner's answer: what they last passed to ``check``, else the name the exercise asked for."""
    from crossmodal_edu.grading.session import checked_answer

    found, answer = checked_answer(task.id)
    namespace = _namespace()
    if not found and task.name in namespace:
        found, answer = True, namespace[task.name]
    return found, answer


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}"


def _codes(fn: Any) -> set:
    """The code objects of ``fn`` (unwrapping decorators and partials)."""
    codes, seen = set(), 0
    while fn is not None and seen < 8:
        seen += 1
        code = getattr(fn, "__code__", None)
        if code is not None:
            codes.add(code)
        fn = getattr(fn, "__wrapped__", None) or getattr(fn, "func", None)
    return codes


def _is_reference(task, answer: Any) -> Optional[str]:
    """A note if the answer *is* the package's reference or code of the task catalogue."""
    if answer is task.reference or (_codes(answer) & _codes(task.reference)):
        return f"the answer is the package's reference `{_name(task.reference)}`"
    filename = getattr(getattr(answer, "__code__", None), "co_filename", "")
    if filename.startswith(_GRADING):
        return f"the answer is the grader's own code `{_name(answer)}`"
    return None


class _Watch:
    """Notices a call, from the learner's code, of the task's reference or of the grader's catalogue."""

    def __init__(self, task):
        self.reference = _codes(task.reference) if task is not None else set()
        self.seen: Optional[str] = None

    def __call__(self, frame, event, arg):
        if event != "call" or self.seen is not None:
            return
        code = frame.f_code
        if code in self.reference or code.co_filename.startswith(_GRADING):
            caller = frame.f_back
            if caller is not None and not caller.f_code.co_filename.startswith(_PACKAGE):
                if code.co_filename == __file__:
                    return
                what = "reference" if code in self.reference else "grader's code"
                self.seen = f"the answer calls the package's {what} `{code.co_name}`"


def _snapshot(value: Any):
    from crossmodal_edu.grading.judge import _snapshot

    return _snapshot(value)


def _same(a: Any, b: Any) -> bool:
    from crossmodal_edu.grading.judge import _same_array

    return _same_array(a, b)


def _error(error: BaseException, fn: Any) -> dict[str, Any]:
    from crossmodal_edu.grading.judge import _where

    try:
        where = _where(error, fn)
    except Exception:
        where = ""
    try:
        message = str(error)[:2000]
    except BaseException:
        message = ""
    return {"type": type(error).__name__, "module": type(error).__module__, "message": message, "where": where}


def _call(request: dict[str, Any]) -> dict[str, Any]:
    from crossmodal_edu.grading.tasks import get_task

    task = get_task(request["task"]) if request.get("task") else None
    if request.get("name"):  # a name in the learner's namespace (a hidden test calls it)
        namespace = _namespace()
        if request["name"] not in namespace:
            return {"error": {"type": "NameError", "module": "builtins", "where": "",
                              "message": f"name {request['name']!r} is not defined"}}
        answer = namespace[request["name"]]
        run = answer
    else:
        found, answer = _answer(task)
        if not found:
            return {"error": {"type": "NameError", "module": "builtins", "where": "",
                              "message": f"name {task.name!r} is not defined"}}
        run = task.run(in_their_names(answer, task.reference))
    args, kwargs = request["args"], request["kwargs"]
    before = [_snapshot(a) for a in args]
    watch = _Watch(task)
    reply: dict[str, Any] = {}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            graph = contextlib.nullcontext()
            if request.get("graph"):  # the judge will ask for gradients: record the graph, whatever the mode
                import torch

                graph = torch.enable_grad()
            sys.setprofile(watch)
            try:
                with graph:
                    value = run(*args, **kwargs)
            finally:
                sys.setprofile(None)
    except KeyboardInterrupt:
        return {"interrupted": True}
    except BaseException as error:  # SystemExit too: it is the learner's answer that raised
        reply["error"] = _error(error, answer)
    else:
        reply["value"] = wire.encode(value)
        if request.get("graph"):
            outputs = list(value) if isinstance(value, tuple) else [value]
            inputs = [a for a in args if getattr(a, "requires_grad", False)]
            _GRAPHS[request["graph"]] = (inputs, outputs)
    reply["changed"] = [[i, wire.encode(a)] for i, (old, a) in enumerate(zip(before, args))
                        if old is not None and not _same(old, _snapshot(a))]
    reply["copied"] = watch.seen
    return reply


def _gradients(request: dict[str, Any]) -> dict[str, Any]:
    import torch

    inputs, outputs = _GRAPHS.pop(request["graph"])
    pairs = [(o, g) for o, g in zip(outputs, request["grads"]) if g is not None and getattr(o, "requires_grad", False)]
    if not pairs or not inputs:
        return {"grads": [wire.encode(None) for _ in inputs]}
    grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
    return {"grads": [wire.encode(g) for g in grads]}


def _find(request: dict[str, Any]) -> dict[str, Any]:
    from crossmodal_edu.grading.spec import FunctionTask
    from crossmodal_edu.grading.tasks import get_task

    task = get_task(request["task"])
    found, answer = _answer(task)
    if not found:
        return {"found": False}
    # A task's function is called here, a class too (an nn.Module to write, 03.gated_block); a prediction's
    # value is sent, even when it is a class (a dtype such as np.float32).
    if callable(answer) and (isinstance(task, FunctionTask) or not isinstance(answer, type)):
        reply: dict[str, Any] = {"found": True, "callable": True, "copied": None}
        if hasattr(task, "reference"):
            reply["copied"] = _is_reference(task, answer)
        return reply
    return {"found": True, "callable": False, "value": wire.encode(answer)}


def serve(request: str, reply_file: str) -> None:
    """Answer one request of the judge (in the kernel): write the reply, as plain data, to ``reply_file``."""
    try:
        message = wire.loads_request(request)
        op = message["op"]
        reply = {"find": _find, "call": _call, "grad": _gradients}[op](message)
    except KeyboardInterrupt:
        reply = {"interrupted": True}
    except BaseException as error:
        reply = {"failed": f"{type(error).__name__}: {str(error)[:500]}"}
    with open(reply_file, "w", encoding="utf-8") as f:
        json.dump(reply, f)
