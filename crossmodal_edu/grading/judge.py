"""Judge one answer to one task: run it on fresh random inputs, compare it with the reference, and
when it is wrong, say which known mistake it is (or, for an unknown one, which property fails and by
how much), in plain words. A task with a ``harness`` (gradients, say) calls and compares every
function through it.

How a wrong function is diagnosed, in order:

1. it raised ``NotImplementedError`` (an exercise stub): *not attempted*;
2. it changed an input array (or PyTorch tensor): the in-place mistake;
3. it still behaves like the buggy code a "fix this" exercise started with: *not attempted*;
4. it agrees with a catalogued mistake on every case: that mistake, with its hint. "Agrees" means:
   on each case either both return outputs that are close, or both raise the same kind of
   exception; and on at least one case both return;
5. it raised an exception: the exception's message and the line of the learner's code it came from
   (in a helper function of theirs that the task function calls: that helper, its line, and the call);
6. it returned the wrong kind or shape of thing: what came and what was expected;
7. otherwise: the first property that fails and the largest deviation from the reference.
"""

from __future__ import annotations

import linecache
import math
import re
import sys
import sysconfig
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from crossmodal_edu.compare import to_numpy
from crossmodal_edu.grading.difference import describe_difference, describe_shape
from crossmodal_edu.grading.remote import RemoteFunction
from crossmodal_edu.grading.result import ERROR, FAILED, NOT_ATTEMPTED, PASSED, Result
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, PredictionTask, Task, in_their_names

__all__ = ["judge", "new_seed"]


def new_seed() -> int:
    """A fresh seed, short enough to read out and type back in."""
    return int(np.random.SeedSequence().entropy % 1_000_000)


@dataclass
class _Outcome:
    """What one call did: returned ``value`` (converted to arrays) or raised ``error``."""

    value: Any = None
    error: Optional[BaseException] = None
    changed: Optional[str] = None  # the name of an input the call modified
    dtypes: tuple[str, ...] = ()  # the float dtype of each output as returned ("float32"), "" for others
    kinds: tuple[str, ...] = ()  # the kind of each output as returned ("b", "i", "f"), "" for others


def _as_arrays(value: Any) -> Any:
    """Tuples and lists of arrays (or tensors, or numbers) as tuples of float64 arrays, recursively."""
    if isinstance(value, (tuple, list)):
        return tuple(_as_arrays(v) for v in value)
    if value is None:
        return None
    try:
        array = to_numpy(value)
    except Exception:
        return value
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    return value


_KIND_WORDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "c": "complex numbers"}


def _kinds(value: Any) -> tuple[str, ...]:
    """The kind of each returned array or tensor, as NumPy names them (``"b"``, ``"i"``, ``"f"``),
    ``""`` for anything else (a Python number, None)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    kinds = []
    for item in items:
        if isinstance(item, np.ndarray):
            kinds.append(item.dtype.kind)
        elif hasattr(item, "dtype") and hasattr(item, "is_floating_point"):  # a tensor
            kinds.append("b" if str(item.dtype) == "torch.bool" else "f" if item.is_floating_point()
                         else "c" if item.is_complex() else "i")
        else:
            kinds.append("")
    return tuple(kinds)


def _wrong_kind(task: FunctionTask, mine: tuple[str, ...], expected: tuple[str, ...]) -> Optional[str]:
    """A sentence when an output that should hold integers or booleans holds another kind (token ids
    as floats cannot index an embedding; a mask of numbers is added to scores, not applied)."""
    for name, a, b in zip(task.outputs, mine, expected):
        if name in task.unreported or not a or not b:
            continue
        if b in "biu" and a != b and not (a in "iu" and b in "iu"):
            return (f"`{name}` holds {_KIND_WORDS.get(a, a)}, but it should hold {_KIND_WORDS[b]}, like the "
                    f"reference's: " + ("a mask must be True/False" if b == "b" else
                                         "token ids and counts are whole numbers (torch.long)"))
        if b == "f" and a in "biu":
            return (f"`{name}` holds {_KIND_WORDS[a]}, but it should hold floats, like the reference's "
                    f"(convert with .to(logits.dtype) or .astype(float)): probabilities, weights and scores are "
                    f"real numbers, and torch.multinomial, for one, refuses integers")
    return None


def _float_dtypes(value: Any) -> tuple[str, ...]:
    """``("float32", "")``: the float dtype of each returned array or tensor (``""`` for anything else)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    names = []
    for item in items:
        dtype = str(getattr(item, "dtype", "")).replace("torch.", "")
        names.append(dtype if dtype.startswith(("float", "bfloat")) else "")
    return tuple(names)


def _same_array(a: Any, b: Any) -> bool:
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _snapshot(value: Any) -> Optional[np.ndarray]:
    """A copy of an input array or PyTorch tensor as it is now (``None`` for anything else), so that
    a change made in place by the call can be seen afterwards."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a tensor, without importing torch
        try:
            return to_numpy(value).copy()
        except Exception:  # a tensor NumPy cannot hold (a meta tensor, say): nothing to compare
            return None
    return None


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "clone") and not isinstance(value, np.ndarray)


def _call(fn: Callable[..., Any], case: Case) -> _Outcome:
    args, options = case.fresh()
    before = [_snapshot(a) for a in args]
    try:
        # The learner's overflow or 0/0 shows up as inf or NaN in the output, which we report;
        # NumPy's warnings would only bury that message.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            value = fn(*args, **options)
    except Exception as error:  # KeyboardInterrupt is not caught: a learner may stop a long check
        return _Outcome(error=error)
    outcome = _Outcome(value=_as_arrays(value), dtypes=_float_dtypes(value), kinds=_kinds(value))
    for name, old, new in zip(case.inputs, before, args):
        if old is not None and not _same_array(old, _snapshot(new)):
            outcome.changed = name
            break
    return outcome


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(_close(x, y, rtol, atol) for x, y in zip(a, b)))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape != b.shape:
            return False
        try:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError:
            return False
        return True
    if a is None or b is None:
        return a is None and b is None
    return False


def _tolerance(task: FunctionTask, case: Case) -> tuple[float, float]:
    return (task.rtol if case.rtol is None else case.rtol), (task.atol if case.atol is None else case.atol)


def _agrees(learner: list[_Outcome], mistake: list[_Outcome], task: FunctionTask, cases: list[Case]) -> bool:
    both_returned = False
    for mine, theirs, case in zip(learner, mistake, cases):
        if mine.error is not None or theirs.error is not None:
            if mine.error is None or theirs.error is None or type(mine.error) is not type(theirs.error):
                return False
            continue
        if not _close(mine.value, theirs.value, *_tolerance(task, case)):
            return False
        both_returned = True
    return both_returned


def _unpack(task: FunctionTask, value: Any) -> tuple[Optional[tuple[np.ndarray, ...]], Optional[str]]:
    """The learner's outputs as a tuple of arrays in the task's order, or a sentence saying why not."""
    n = len(task.outputs)
    if n == 1:
        if value is None:
            return None, "returned None: did it forget to `return`?"
        items = (value,)
    else:
        wanted = f"a tuple ({', '.join(task.outputs)})"
        if value is None:
            return None, f"returned None instead of {wanted}: did it forget to `return`?"
        if not isinstance(value, tuple):
            return None, f"returned {_kind(value)} instead of {wanted}"
        if len(value) != n:
            return None, f"returned a tuple of {len(value)} things instead of {wanted}"
        items = value
    arrays = []
    for name, item in zip(task.outputs, items):
        if item is None:
            return None, (f"returned None for `{name}`: did it forget to compute it, or take it from a call that "
                          f"gives None (nn.MultiheadAttention does for its weights with need_weights=False)?")
        if not isinstance(item, np.ndarray):
            return None, f"returned {_kind(item)} for `{name}`, not an array"
        arrays.append(item)
    return tuple(arrays), None


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"one array of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


# Where libraries live (NumPy, PyTorch, Python itself, this package): a frame there is not the learner's.
_LIBRARY_DIRS = tuple(sorted({str(Path(p).resolve()) + "/" for p in (
    *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")),
    Path(__file__).resolve().parents[1])}))
# The frames Python makes for a comprehension or a generator expression: their lines belong to the
# function they are written in.
_COMPREHENSIONS = {"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"}


def _is_learners(filename: str, own: str) -> bool:
    """Is ``filename`` the learner's code (the cell of their function, another cell, a file of their
    own) rather than a library's or Python's?"""
    if filename == own or filename.startswith("<ipython-input"):
        return True
    if filename.startswith("<"):  # <frozen ...>, <string>: code Python or a library made
        return False
    try:
        return not (str(Path(filename).resolve()) + "/").startswith(_LIBRARY_DIRS)
    except (OSError, ValueError):  # a name no file can have
        return False


def _function_name(code, fn_code) -> str:
    """``softmax`` for the task function itself; ``your helper `scores` `` for a function it calls."""
    if code is fn_code:
        return code.co_name
    return "your lambda" if code.co_name == "<lambda>" else f"your helper `{code.co_name}`"


def _place(code, lineno: int, fn_code) -> str:
    """``line 3 of softmax``, or ``your helper `scores`, line 2``: ``lineno`` of the file counted from the
    first line of the function ``code``."""
    number = lineno - code.co_firstlineno + 1
    name = _function_name(code, fn_code)
    if number < 1:  # a function whose first line is unknown: no line number rather than a wrong one
        return name
    return f"line {number} of {name}" if code is fn_code else f"{name}, line {number}"


def _where(error: BaseException, fn: Callable[..., Any]) -> str:
    """The learner's line the exception came from: ``line 3 of softmax: `return e / e.sum()` ``; when it
    came from a function of theirs that ``fn`` calls, ``your helper `scores`, line 2: `return q @ k`
    (called from line 4 of attention)``."""
    remote = getattr(error, "remote_where", None)
    if isinstance(remote, str):  # raised in the learner's kernel, which found the line there
        return remote
    fn_code = getattr(fn, "__code__", None)
    frames = list(traceback.walk_tb(error.__traceback__))
    if isinstance(fn, type):  # a class of the learner's (an nn.Module): its own methods count as the answer
        methods = {v.__code__: f"{fn.__name__}.{v.__code__.co_name}" for klass in fn.__mro__
                   for v in vars(klass).values() if hasattr(v, "__code__")
                   and _is_learners(v.__code__.co_filename, "")}
        hit = next(((frame, lineno) for frame, lineno in reversed(frames) if frame.f_code in methods), None)
        if hit is None:
            return ""
        frame, lineno = hit
        number = lineno - frame.f_code.co_firstlineno + 1
        line = linecache.getline(frame.f_code.co_filename, lineno, frame.f_globals).strip()
        return f"line {number} of {methods[frame.f_code]}" + (f": `{line}`" if line else "")
    if fn_code is None:
        return ""
    start = next((i for i, (frame, _) in enumerate(frames) if frame.f_code is fn_code), None)
    if start is None:
        return ""
    steps = []  # (the function whose lines count, frame, line): one per call among the learner's functions
    for frame, lineno in frames[start:]:
        if frame.f_code is not fn_code and not _is_learners(frame.f_code.co_filename, fn_code.co_filename):
            continue
        if frame.f_code.co_name in _COMPREHENSIONS and steps:
            steps[-1] = (steps[-1][0], frame, lineno)
        else:
            steps.append((frame.f_code, frame, lineno))
    code, frame, lineno = steps[-1]
    line = linecache.getline(frame.f_code.co_filename, lineno, frame.f_globals).strip()
    where = _place(code, lineno, fn_code) + (f": `{line}`" if line else "")
    if len(steps) > 1:
        caller, _, caller_line = steps[-2]
        where += f" (called from {_place(caller, caller_line, fn_code)})"
    return where


def _error_text(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    first = message[0] if message else ""
    if len(first) > 300:
        first = first[:300] + "…"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _deviation(task: FunctionTask, mine: tuple[np.ndarray, ...], expected: tuple[np.ndarray, ...]) -> str:
    worst = None
    for name, a, b in zip(task.outputs, mine, expected):
        if name in task.unreported:
            continue
        with np.errstate(invalid="ignore"):  # equal infinities (masked -inf logits) do not deviate
            diff = np.where((np.isnan(a) & np.isnan(b)) | (a == b), 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        if diff.size == 0:
            continue
        i = int(np.argmax(diff))
        if worst is None or diff.flat[i] > worst[0]:
            worst = (float(diff.flat[i]), name, np.unravel_index(i, a.shape), a.flat[i], b.flat[i])
    if worst is None:
        return "the values differ from the reference"
    size, name, index, yours, ref = worst
    if size == 0:  # every value right: what fails is something else (a property, a flag)
        return ""
    index = tuple(int(j) for j in index)
    return (f"largest deviation from the reference: {size:.3g} in `{name}` at index {index} "
            f"(yours {yours:.6g}, reference {ref:.6g})")


def _result(task: Task, status: str, summary: str, details: list[str] = (), mistake: Optional[str] = None,
            seed: Optional[int] = None) -> Result:
    reproduce = None
    if seed is not None:
        reproduce = f'check("{task.id}", {task.name}, seed={seed})'
    return Result(task_id=task.id, title=task.title, status=status,
                  points=task.points if status == PASSED else 0, max_points=task.points,
                  summary=summary, details=list(details), mistake=mistake, seed=seed,
                  reproduce=reproduce)


def _reference(task: FunctionTask, case: Case) -> Any:
    args, options = case.fresh()
    return task.run(task.reference)(*args, **options)


def _not_implemented(outcomes: list[_Outcome], task: FunctionTask) -> Optional[NotImplementedError]:
    """The ``NotImplementedError`` of an exercise stub, if one was raised. One that a catalogued mistake
    expects (PyTorch raises it for ``-mask`` on a bool tensor, in some versions), or one raised inside a
    library rather than in the learner's code, is not a stub."""
    for outcome in outcomes:
        error = outcome.error
        if not isinstance(error, NotImplementedError):
            continue
        if any(m.raises and re.search(m.raises, _error_text(error)) for m in task.mistakes):
            continue
        frames = list(traceback.walk_tb(error.__traceback__))
        if frames and not isinstance(getattr(error, "remote_where", None), str) and \
                not _is_learners(frames[-1][0].f_code.co_filename, ""):
            continue
        return error
    return None


def _judge_function(task: FunctionTask, fn: Any, seed: int, helpers: bool = True) -> Result:
    """:func:`_judge_answer`, and when the answer fails, whether a function of the learner's that it
    calls is their answer to another task that fails its own check: that is where to look first."""
    result = _judge_answer(task, fn, seed)
    if result.status in (FAILED, ERROR) and helpers:
        for other, helper in _tasks_it_calls(task, fn):
            theirs = _judge_function(other, helper, seed, helpers=False)
            if theirs.status in (FAILED, ERROR):
                result.details.insert(0, (
                    f"Look at your `{other.name}` first: it is your answer to task {other.id}, `{task.name}` "
                    f"calls it, and it does not pass its own check ({theirs.summary}). Fix it and re-check "
                    f"it with check(\"{other.id}\", {other.name})."))
    return result


def _names_used(code) -> set[str]:
    """The global names a function's code (and the code nested in it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_used(const)
    return names


def _tasks_it_calls(task: FunctionTask, fn: Any) -> list[tuple[FunctionTask, Callable[..., Any]]]:
    """The other function tasks whose function (by its name in the learner's namespace) ``fn``
    calls: ``attention`` calling the learner's own ``softmax``, say."""
    code, namespace = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is None or not isinstance(namespace, dict) or isinstance(fn, RemoteFunction):
        return []
    from crossmodal_edu.grading.tasks import all_tasks  # the catalogue imports this module's neighbours

    used = _names_used(code)
    found = []
    for other in all_tasks():
        if not isinstance(other, FunctionTask) or other.id == task.id or other.name not in used:
            continue
        helper = namespace.get(other.name)
        if callable(helper) and helper is not fn and hasattr(helper, "__code__"):
            found.append((other, helper))
    return found


def _judge_answer(task: FunctionTask, fn: Any, seed: int) -> Result:
    if fn is None or fn is Ellipsis:
        return _result(task, NOT_ATTEMPTED, f"not attempted yet: `{task.name}` is {fn!r}")
    if not callable(fn):
        return _result(task, FAILED, f"`{task.name}` should be a function {task.signature}, "
                                     f"but it is {_kind(fn)}", seed=seed)
    cases = task.cases(np.random.default_rng(seed))
    # What is called and compared: fn, or the task's harness around it. A function in the learner's
    # kernel (the class grader) goes through the harness there: the judge only sees what comes back.
    run = fn if isinstance(fn, RemoteFunction) else task.run(in_their_names(fn, task.reference))
    mine = [_call(run, case) for case in cases]

    stub = _not_implemented(mine, task)
    if stub is not None:
        said = str(stub).strip()
        return _result(task, NOT_ATTEMPTED, "not attempted yet" + (f" ({said})" if said else ""))

    for case, outcome in zip(cases, mine):
        if outcome.changed is not None:
            name = outcome.changed
            if _is_tensor(case.inputs[name]):
                fix = (f"work on a copy instead: `{name} = {name}.clone()` first, or an operation that "
                       f"returns a new tensor (`{name} - …`, `torch.where(…)`, `.masked_fill(…)` without the _)")
            else:
                fix = f"work on a new array instead: `{name} = {name} - …`, or `{name} = {name}.copy()` first"
            hint = (f"your function changed its input `{name}` in place (an in-place operation such as "
                    f"`{name} -= …`, `{name}[...] = …` or a method ending in _); {fix}")
            return _result(task, FAILED, f"mistake found: {IN_PLACE}", [f"Hint: {hint}",
                           f"Seen on: {case.describe()}"], mistake=IN_PLACE, seed=seed)

    raw = [_reference(task, case) for case in cases]
    expected, expected_dtypes = [_as_arrays(r) for r in raw], [_float_dtypes(r) for r in raw]
    expected_kinds = [_kinds(r) for r in raw]
    unpacked = [(_unpack(task, o.value) if o.error is None else (None, None)) for o in mine]
    right = [o.error is None and _close(o.value, e, *_tolerance(task, c)) for o, e, c in zip(mine, expected, cases)]

    if all(right):
        for case, outcome, kinds in zip(cases, mine, expected_kinds):
            problem = _wrong_kind(task, outcome.kinds, kinds)
            if problem:
                return _result(task, FAILED, "matches the reference's values, yet of the wrong kind",
                               [f"But {problem}", f"Seen on: {case.describe()}"], seed=seed)
        for case, (outputs, _) in zip(cases, unpacked):
            for prop in task.properties:
                problem = _checked_property(prop, run, case, outputs)
                if problem:
                    return _result(task, FAILED, f"matches the reference, yet {prop.name}",
                                   [f"But {problem}", f"Seen on: {case.describe()}"], seed=seed)
        return _result(task, PASSED, "passed", seed=seed)

    # The planted bug of a "fix this" exercise first: while it is there, nothing was fixed yet.
    catalogue = sorted((m for m in task.mistakes if m.impl is not None and not m.in_place),
                       key=lambda m: m.name != task.planted)
    for mistake in catalogue:
        if not any(_agrees(mine, [_call(task.run(impl), case) for case in cases], task, cases)
                   for impl in (mistake.impl, *mistake.also)):
            continue
        if mistake.name == task.planted:
            return _result(task, NOT_ATTEMPTED,
                           "not fixed yet: it still behaves like the buggy version you were given",
                           mistake=mistake.name)
        return _result(task, FAILED, f"mistake found: {mistake.name}", [f"Hint: {mistake.hint}"],
                       mistake=mistake.name, seed=seed)

    for mistake in task.mistakes:
        if mistake.raises is None:
            continue
        for case, outcome in zip(cases, mine):
            if outcome.error is not None and re.search(mistake.raises, _error_text(outcome.error)):
                where = _where(outcome.error, fn)
                return _result(task, FAILED, f"mistake found: {mistake.name}",
                               [f"Hint: {mistake.hint}", f"It raised {_error_text(outcome.error)}"]
                               + ([f"In {where}"] if where else []) + [f"Seen on: {case.describe()}"],
                               mistake=mistake.name, seed=seed)

    first_wrong = right.index(False)
    case, outcome = cases[first_wrong], mine[first_wrong]
    seen = f"Seen on: {case.describe()}"
    if outcome.error is not None:
        where = _where(outcome.error, fn)
        details = [f"It raised {_error_text(outcome.error)}"] + ([f"In {where}"] if where else []) + [seen]
        return _result(task, ERROR, f"your function raised {type(outcome.error).__name__}", details,
                       seed=seed)
    outputs, problem = unpacked[first_wrong]
    if problem:
        return _result(task, FAILED, f"it {problem}", [seen], seed=seed)
    reference_outputs, _ = _unpack(task, expected[first_wrong])
    for name, a, b in zip(task.outputs, outputs, reference_outputs):
        if a.shape != b.shape:
            how = describe_shape(a, b)
            return _result(task, FAILED, f"`{name}` has the wrong shape",
                           [f"`{name}` has shape {tuple(a.shape)}, but it should have shape "
                            f"{tuple(b.shape)}" + (f": {how}" if how else ""), seen], seed=seed)
    deviation = [_deviation(task, outputs, reference_outputs).capitalize(),
                 *_how_it_differs(task, case, outputs, reference_outputs),
                 *_precision(task, outcome.dtypes, expected_dtypes[first_wrong])]
    deviation = [line for line in deviation if line]
    for prop in task.properties:
        problem = _checked_property(prop, run, case, outputs)
        if problem:
            return _result(task, FAILED, f"not yet: {prop.name}", [f"But {problem}", *deviation, seen], seed=seed)
    return _result(task, FAILED, "not yet: every property holds, but the values differ from the reference",
                   [*deviation, seen], seed=seed)


def _precision(task: FunctionTask, mine: tuple[str, ...], expected: tuple[str, ...]) -> list[str]:
    """A line for each output returned in a lower float precision than the reference's."""
    bits = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}
    return [f"`{name}` is {a}, the reference's {b}: keep the inputs' precision (no conversion to {a})"
            for name, a, b in zip(task.outputs, mine, expected)
            if a in bits and b in bits and bits[a] < bits[b]]


def _how_it_differs(task: FunctionTask, case: Case, mine: tuple[np.ndarray, ...],
                    expected: tuple[np.ndarray, ...]) -> list[str]:
    """Which outputs are right and which are not, and what kind of difference each wrong one shows."""
    lines, wrong = [], []
    for name, a, b in zip(task.outputs, mine, expected):
        if name in task.unreported:
            continue
        if not _close(a, b, *_tolerance(task, case)):
            wrong.append(name)
            how = describe_difference(a, b)
            if how:
                lines.append(f"`{name}`: {how}")
    shown = [n for n in task.outputs if n not in task.unreported]
    if len(shown) > 1 and 0 < len(wrong) < len(shown):
        right = [n for n in shown if n not in wrong]
        lines.insert(0, f"{' and '.join(f'`{n}`' for n in right)} {'is' if len(right) == 1 else 'are'} right; "
                        f"{' and '.join(f'`{n}`' for n in wrong)} {'is' if len(wrong) == 1 else 'are'} not")
    return lines


def _checked_property(prop, fn, case: Case, outputs) -> Optional[str]:
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return prop.test(fn, case, outputs)
    except Exception as error:  # a property that re-calls the learner's function may hit its bug
        return f"{prop.name}: checking it raised {_error_text(error)}"


def _shown(value: Any) -> str:
    """A predicted value for a message: ``4.94`` for a number, its repr otherwise."""
    if isinstance(value, float):
        return f"{value:.6g}"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _judge_prediction(task: PredictionTask, value: Any) -> Result:
    if value is None or value is Ellipsis:
        return _result(task, NOT_ATTEMPTED, f"not attempted yet: write {task.expects} into `{task.name}`")
    if task.read is not None:
        try:
            value = task.read(value)
        except Exception as why:  # the reader says what came; anything else it met, we name by its type
            came = why if isinstance(why, (TypeError, ValueError)) else f"a {type(value).__name__}"
            return _result(task, FAILED, f"not quite: `{task.name}` should be {task.expects}, but it is {came}")
    try:
        right = bool(task.accept(value))
    except Exception:
        right = False
    if right:
        return _result(task, PASSED, "passed", [task.explanation])
    for mistake in task.mistakes:
        try:
            same = bool(task.same(value, mistake.value))
        except Exception:
            same = False
        if same:
            return _result(task, FAILED, f"not quite: {mistake.name}", [f"Hint: {mistake.hint}"],
                           mistake=mistake.name)
    direction = _how_far(value, task.answer)
    return _result(task, FAILED, f"not quite: {_shown(value)} is not what happens",
                   ([direction] if direction else []) + ["Run the experiment below, then think again."])


def _rough(factor: float) -> str:
    """A factor said roughly, so that it points the way without giving the answer: ``about 3``."""
    if factor < 1.25:
        return "less than 25%"
    if factor < 1.75:
        return "about 1.5 times"
    digits = 10 ** math.floor(math.log10(factor))
    return f"about {round(factor / digits) * digits:g} times"


def _how_far(value: Any, answer: Any) -> Optional[str]:
    """Which way a wrong prediction is off, and roughly by how much: ``too large, by about 3 times``;
    for a shape, which axes are wrong. ``None`` for anything else."""
    if isinstance(answer, tuple):
        try:
            mine = tuple(int(n) for n in value)
        except (TypeError, ValueError):
            return None
        if len(mine) != len(answer):
            return f"It has {len(mine)} axes; the real one has {len(answer)}."
        wrong = [i for i, (m, a) in enumerate(zip(mine, answer)) if m != a]
        return f"The number of axes is right; {'axis' if len(wrong) == 1 else 'axes'} {', '.join(map(str, wrong))} {'is' if len(wrong) == 1 else 'are'} not."
    try:
        mine, real = float(value), float(answer)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(mine) and math.isfinite(real)) or real == 0:
        return None
    if isinstance(answer, int) and mine != round(mine):
        return "It should be a whole number: it counts things."
    if mine == 0:
        return "It is not 0."
    if (mine < 0) != (real < 0):
        return f"The sign is wrong: it is {'positive' if real > 0 else 'negative'}."
    ratio = mine / real
    if ratio > 1:
        return f"It is too large, by {_rough(ratio)}."
    return f"It is too small: the real value is larger by {_rough(1 / ratio)}."


@contextmanager
def _one_torch_thread():
    """Run a check's PyTorch calls on one thread, then restore the thread count.

    Checks use tiny tensors, on which PyTorch's intra-op threads only cost: on a busy 2-core
    machine a 2-thread softmax of 200 numbers took 8 ms instead of 5 µs, and a check makes
    hundreds of such calls. Without PyTorch loaded (the NumPy lessons) this does nothing.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def judge(task: Task, answer: Any, seed: Optional[int] = None) -> Result:
    """Judge ``answer`` (a function, or a predicted value) against ``task``; never raises for the
    learner's mistakes. ``seed`` reproduces a function check (a fresh one is drawn if ``None``)."""
    if isinstance(task, PredictionTask):
        return _judge_prediction(task, answer)
    with _one_torch_thread():
        return _judge_function(task, answer, new_seed() if seed is None else int(seed))
