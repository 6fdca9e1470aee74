r"""What a graded task is: the inputs it draws, the reference it is held to, the properties a correct
answer has, and the catalogue of known mistakes that a wrong answer is compared with.

A lesson's exercises are a module of these specs in ``crossmodal_edu/grading/tasks/`` (one module
per lesson, ``lessonNN.py``, exposing ``TASKS``); adding a lesson is adding such a module.

Two kinds of task:

* :class:`FunctionTask`: the learner writes (or fixes) a function. Every check draws fresh random
  inputs (:class:`Case`) from a seed, so a hard-coded answer cannot pass, and compares the
  learner's output with ``reference`` (the package's own implementation).
* :class:`PredictionTask`: "predict, then run": the learner writes down a value before running an
  experiment; wrong values that reveal a known misconception name it.

A :class:`Mistake` is a known wrong answer written as code (or, for a prediction, as a value), with a
name and a hint. On a mismatch the check runs every catalogued mistake on the same inputs and names
the one whose output the learner's output reproduces.
"""

from __future__ import annotations

import copy
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["Case", "Mistake", "Property", "FunctionTask", "PredictionTask", "Task", "IN_PLACE", "in_their_names"]

# The one mistake every function task can show, detected by comparing the inputs before and after.
IN_PLACE = "changes its input in place"


@dataclass(frozen=True)
class Case:
    """One set of inputs for a function under test.

    ``inputs`` are passed positionally, in order (their names are only for messages, so a learner
    may name the parameters as they like); ``options`` are passed by keyword (``axis=1``).
    ``note`` says what is special about the case ("logits near 10 000"), for messages. ``rtol`` and
    ``atol``, when given, replace the task's tolerances on this case (one in float32, say).
    """

    inputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    rtol: Optional[float] = None  # looser tolerances for this case than the task's (a float32 case, say)
    atol: Optional[float] = None

    def fresh(self) -> tuple[list[Any], dict[str, Any]]:
        """Deep copies of the arguments, so that no call can change what the next call sees."""
        return copy.deepcopy(list(self.inputs.values())), copy.deepcopy(dict(self.options))

    def describe(self) -> str:
        """``q (2, 3, 4, 6), k (2, 3, 7, 6), axis=1``: the shapes a message should mention."""
        parts = []
        for name, value in self.inputs.items():
            shape = getattr(value, "shape", None)
            parts.append(f"{name} {tuple(int(n) for n in shape)}" if shape is not None else name)
        parts += [f"{name}={value!r}" for name, value in self.options.items()]
        text = ", ".join(parts)
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer.

    ``name`` is what the learner is told they did ("softmax over the queries axis"), ``hint`` what to
    change. ``impl`` is the mistake as code, with the task function's signature; ``value`` is the
    wrong prediction that reveals it (prediction tasks). A mistake with ``in_place=True`` is
    recognised by the inputs changing, not by its output. A mistake with ``raises`` (a regular
    expression) is recognised by the exception the learner's function raises: its type and message,
    ``"TypeError: ..."``, must match (``re.search``); it needs no ``impl``. ``also`` holds other ways
    of writing the same mistake that give other outputs (a row with nothing to see left NaN by one
    softmax and zero by another): agreeing with any of them names it.
    """

    name: str
    hint: str
    impl: Optional[Callable[..., Any]] = None
    value: Any = None
    in_place: bool = False
    raises: Optional[str] = None
    also: tuple[Callable[..., Any], ...] = ()


@dataclass(frozen=True)
class Property:
    """A property every correct output has, stated in plain words.

    ``test(fn, case, outputs)`` gets the learner's function (inside the task's ``harness``, if it
    has one), the case, and the learner's outputs
    (a tuple of float64 arrays, in the order of the task's ``outputs``) and returns ``None`` when
    the property holds, or a sentence saying how it fails ("row (0, 2) sums to 0.73").
    """

    name: str
    test: Callable[[Callable[..., Any], Case, tuple[np.ndarray, ...]], Optional[str]]


@dataclass(frozen=True)
class FunctionTask:
    """A task whose answer is a function: implement it, or fix the buggy one given.

    ``cases(rng)`` draws the inputs of one check; sizes are chosen so that mistakes are
    distinguishable (Lq != Lk, d_k != d_v, d_k > 1, batch dims), and some cases exist only to
    tell two mistakes apart. ``reference`` is the correct function with the same signature.
    ``outputs`` names what the function returns: one name for a single array, several for a tuple.
    ``planted`` names the catalogued mistake that a "fix this buggy function" exercise starts
    with: while the learner's function still shows it, the task counts as not attempted.

    ``harness``, when given, measures more than what a function returns: ``harness(fn)`` is called
    with a case's inputs in place of ``fn`` (it calls ``fn`` with them), and ``outputs`` names what
    *it* returns. The learner's answer, the reference and every catalogued mistake, all with the
    learner's signature, go through it alike. A task about autograd uses it to return, besides the
    result, the gradients the result sends back to the inputs (``05.straight_through``).

    ``unreported`` names outputs (of the harness) that only tell two mistakes apart, such as a flag:
    they are compared with the reference and the catalogue like the others, but a message about the
    largest deviation never names them.
    """

    id: str
    title: str
    points: int
    name: str
    signature: str
    cases: Callable[[np.random.Generator], list[Case]]
    reference: Callable[..., Any]
    outputs: tuple[str, ...]
    properties: tuple[Property, ...] = ()
    mistakes: tuple[Mistake, ...] = ()
    planted: Optional[str] = None
    rtol: float = 1e-6
    atol: float = 1e-9
    harness: Optional[Callable[[Callable[..., Any]], Callable[..., Any]]] = None
    unreported: tuple[str, ...] = ()

    def run(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """What a check calls with a case's inputs for the answer ``fn``: ``fn`` itself, or the
        ``harness`` around it."""
        return fn if self.harness is None else self.harness(fn)

    def __post_init__(self) -> None:
        names = [m.name for m in self.mistakes]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.id}: two catalogued mistakes share a name: {names}")
        if self.planted is not None and self.planted not in names:
            raise ValueError(f"{self.id}: planted mistake {self.planted!r} is not in the catalogue")
        if not set(self.unreported) <= set(self.outputs):
            raise ValueError(f"{self.id}: unreported outputs {self.unreported} are not among {self.outputs}")


@dataclass(frozen=True)
class PredictionTask:
    """A "predict, then run" question: the learner writes a value before running the experiment.

    ``accept(value)`` says whether a prediction is right; ``answer`` is shown once it is, with
    ``explanation``. Each catalogued mistake carries the wrong ``value`` that reveals it, matched
    with ``same(value, mistake.value)``. ``expects`` says in words what to write ("a number").

    ``read``, when given, turns what the learner wrote into the value that ``accept`` and ``same`` get
    (``torch.tensor(4.9)`` into ``4.9``, say), or raises ``TypeError`` saying in words what came instead
    ("a str: 'no idea'"), which the learner is told beside ``expects``.
    """

    id: str
    title: str
    points: int
    name: str
    expects: str
    answer: Any
    accept: Callable[[Any], bool]
    explanation: str
    mistakes: tuple[Mistake, ...] = ()
    same: Callable[[Any, Any], bool] = lambda a, b: a == b
    read: Optional[Callable[[Any], Any]] = None


Task = FunctionTask | PredictionTask


def in_their_names(fn: Callable[..., Any], reference: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, taking the keyword options a check passes under the names of the reference's parameters
    (``start_id=9``) by position, under its own names: a learner who renamed ``start_id`` to ``start``
    in the ``def`` line still has a right answer. ``fn`` itself when no renaming is needed (or when its
    signature cannot be read, or it takes ``**kwargs``, or it is a class)."""
    if isinstance(fn, type):
        return fn
    try:
        mine = list(inspect.signature(fn).parameters.values())
        theirs = list(inspect.signature(reference).parameters)
    except (TypeError, ValueError):
        return fn
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in mine):
        return fn
    names = [p.name for p in mine if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    renamed = {name: names[i] for i, name in enumerate(theirs) if name not in names and i < len(names)}
    if not renamed:
        return fn

    @functools.wraps(fn)
    def call(*args: Any, **options: Any) -> Any:
        return fn(*args, **{renamed.get(name, name): value for name, value in options.items()})

    return call
