"""What a check says: one result per task, and the scoreboard that sums them.

Both display as HTML in JupyterLab and Colab and as plain text everywhere else (a terminal, nbval,
the class grader's CSV). The plain text is the feedback; the HTML only adds colour and layout.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Result", "Scoreboard", "PASSED", "FAILED", "ERROR", "NOT_ATTEMPTED", "NOT_CHECKED"]

PASSED = "passed"
FAILED = "failed"  # a wrong answer: a named mistake, or a failing property and the deviation
ERROR = "error"  # the learner's code raised an exception
NOT_ATTEMPTED = "not attempted"
NOT_CHECKED = "not checked"  # scoreboard only: the check cell has not been run

_SYMBOL = {PASSED: "✓", FAILED: "✗", ERROR: "✗", NOT_ATTEMPTED: "○", NOT_CHECKED: "·"}
_COLOUR = {PASSED: "#2e7d32", FAILED: "#c62828", ERROR: "#c62828", NOT_ATTEMPTED: "#757575",
           NOT_CHECKED: "#9e9e9e"}


def _html(text: str) -> str:
    """Escape ``text`` for HTML and show its `backticked` spans as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


@dataclass
class Result:
    """The verdict of one check of one task.

    ``summary`` is one line ("mistake found: softmax over the queries axis"); ``details`` are the
    lines under it (hint, inputs, largest deviation); ``mistake`` is the catalogued mistake's name
    when one matched (or :data:`~crossmodal_edu.grading.spec.IN_PLACE`); ``seed`` reproduces the
    check, ``None`` for a prediction (it draws nothing). The seed is shown only when the check
    fails, where it is needed: a passing check reads the same on every run.
    """

    task_id: str
    title: str
    status: str
    points: int
    max_points: int
    summary: str
    details: list[str] = field(default_factory=list)
    mistake: Optional[str] = None
    seed: Optional[int] = None
    reproduce: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def _seed(self) -> str:
        return f" · seed {self.seed}" if self.seed is not None and self.status in (FAILED, ERROR) else ""

    def headline(self) -> str:
        seed = self._seed()
        return (f"{_SYMBOL[self.status]} {self.task_id} · {self.title}: {self.summary} "
                f"({self.points}/{self.max_points} points{seed})")

    def text(self) -> str:
        """The plain-text feedback: the headline, then indented details and how to reproduce."""
        lines = [self.headline()] + [f"    {line}" for line in self.details]
        if self.reproduce and self.status in (FAILED, ERROR):
            lines.append(f"    Reproduce: {self.reproduce}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython's plain-text display
        printer.text(self.text())

    def _repr_html_(self) -> str:
        colour = _COLOUR[self.status]
        seed = self._seed()
        rows = "".join(f"<div style='margin-left:1.4em'>{_html(line)}</div>" for line in self.details)
        if self.reproduce and self.status in (FAILED, ERROR):
            rows += (f"<div style='margin-left:1.4em'>Reproduce: "
                     f"<code>{html.escape(self.reproduce)}</code></div>")
        return (
            f"<div style='border-left:4px solid {colour};padding:2px 8px;margin:2px 0'>"
            f"<b style='color:{colour}'>{_SYMBOL[self.status]}</b> "
            f"<b>{html.escape(self.task_id)} · {html.escape(self.title)}</b>: "
            f"{_html(self.summary)} "
            f"<span style='opacity:0.7'>({self.points}/{self.max_points} points{seed})</span>"
            f"{rows}</div>"
        )


@dataclass
class Scoreboard:
    """The latest result of every task of a lesson (or ``None`` for a task not checked yet)."""

    lesson: str
    rows: list[tuple[str, str, int, Optional[Result]]]  # (task_id, title, max_points, result)

    @property
    def points(self) -> int:
        return sum(r.points for *_, r in self.rows if r is not None)

    @property
    def max_points(self) -> int:
        return sum(m for _, _, m, _ in self.rows)

    @property
    def passed(self) -> int:
        return sum(1 for *_, r in self.rows if r is not None and r.passed)

    def _status(self, result: Optional[Result]) -> str:
        return NOT_CHECKED if result is None else result.status

    def text(self) -> str:
        width = max(len(t) for t, *_ in self.rows)
        lines = [f"Scoreboard · exercises {self.lesson}"]
        for task_id, title, max_points, result in self.rows:
            status = self._status(result)
            got = 0 if result is None else result.points
            lines.append(f"  {_SYMBOL[status]} {task_id:<{width}}  {title:<34} {status:<14} "
                         f"{got}/{max_points}")
        lines.append(f"  Total: {self.points}/{self.max_points} points "
                     f"({self.passed} of {len(self.rows)} tasks passed)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text())

    def _repr_html_(self) -> str:
        body = ""
        for task_id, title, max_points, result in self.rows:
            status = self._status(result)
            got = 0 if result is None else result.points
            body += (f"<tr><td style='color:{_COLOUR[status]}'>{_SYMBOL[status]}</td>"
                     f"<td><code>{html.escape(task_id)}</code></td><td>{html.escape(title)}</td>"
                     f"<td>{status}</td><td style='text-align:right'>{got}/{max_points}</td></tr>")
        return (f"<table><caption style='text-align:left'><b>Scoreboard · exercises "
                f"{html.escape(self.lesson)}</b></caption>{body}"
                f"<tr><td></td><td colspan='3'><b>Total</b> ({self.passed} of {len(self.rows)} tasks "
                f"passed)</td><td style='text-align:right'><b>{self.points}/{self.max_points}</b></td>"
                f"</tr></table>")
