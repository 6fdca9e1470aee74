"""Grade a class: run every submitted exercise notebook and re-check every task.

.. code-block:: bash

    python -m crossmodal_edu.grade submissions/ --out grades.csv          # also writes grades.json
    python -m crossmodal_edu.grade alice.ipynb bob.ipynb --out grades.csv --jobs 4

For each submission, in a temporary folder and a fresh kernel of this Python:

1. the notebook is read from a temporary copy (the submission itself is only ever read) and its
   cells run one by one with nbclient, each with a time limit (``--cell-timeout``) and all of them
   together with another (``--notebook-timeout``). A cell that runs too long is interrupted and the
   next one runs; output beyond ``--max-output`` characters per cell is dropped;
2. then, for every task of the lesson, one more cell re-checks the learner's answer on the
   grader's seeds (``--seeds`` of them, the same for the whole class) and runs the instructor's
   hidden tests from the solution notebook (``--solutions``).

The report has one row per submission: points, a status, notes (cells that failed or ran too long,
a notebook that could not be read ...) and, per task, points and the feedback text the learner would
see. A broken submission gets a clear line in the report and never stops the batch.

**Learners' code runs unsandboxed**, with your permissions. For submissions you do not trust, run
the grader in a container or a throwaway virtual machine, without your credentials.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional

import nbformat
import numpy as np

from crossmodal_edu.exercises import BEGIN_HIDDEN, END_HIDDEN
from crossmodal_edu.lessons import LESSON_ID, course_notebooks, notebook_id
from crossmodal_edu.grading.runner import NOT_GRADED, run_and_regrade
from crossmodal_edu.grading.tasks import lessons, tasks_for_lesson

__all__ = ["Limits", "grade_submission", "grade_all", "write_reports", "hidden_tests", "main"]

GRADED = "graded"


@dataclass(frozen=True)
class Limits:
    cell_timeout: int = 60  # seconds for each cell, and for checking each task
    notebook_timeout: int = 600  # seconds for all of a submission's own cells together
    max_output: int = 100_000  # characters of output kept per cell
    startup_timeout: int = 60  # seconds for a kernel to start


def hidden_tests(solution: nbformat.NotebookNode) -> dict[str, str]:
    """The hidden-test code of a solution notebook, by task id (the ``check("NN.name", ...)`` of its cell)."""
    tests: dict[str, str] = {}
    for cell in solution.cells:
        if cell.cell_type != "code" or BEGIN_HIDDEN not in cell.source:
            continue
        checked = re.findall(rf"""check\(\s*["']({LESSON_ID}\.\w+)["']""", cell.source)
        if len(set(checked)) != 1:
            raise ValueError(f"a cell with hidden tests must check exactly one task, this one checks "
                             f"{sorted(set(checked)) or 'none'}: {cell.source[:80]!r}")
        blocks = re.findall(rf"^[ \t]*{re.escape(BEGIN_HIDDEN)}[ \t]*\n(.*?)^[ \t]*{re.escape(END_HIDDEN)}",
                            cell.source, flags=re.MULTILINE | re.DOTALL)
        tests[checked[0]] = tests.get(checked[0], "") + "".join(blocks)
    return tests


def _lesson_of(nb: Optional[nbformat.NotebookNode], path: Path) -> Optional[str]:
    known = lessons()
    if nb is not None:
        meta = nb.get("metadata", {}).get("crossmodal_edu", {}).get("lesson")
        if meta in known:
            return meta
    if notebook_id(path) in known:
        return notebook_id(path)
    if nb is not None:
        ids = re.findall(rf"""check\(\s*["']({LESSON_ID})\.""",
                         "\n".join(c.get("source", "") for c in nb.get("cells", []) if c.get("cell_type") == "code"))
        counts = Counter(i for i in ids if i in known)
        if counts:
            return counts.most_common(1)[0][0]
    return None


def _read(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, or a ``ValueError`` saying in words why it cannot be one."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"it is not valid JSON ({error.msg}, line {error.lineno}, column {error.colno}): "
                         f"cut off, or edited outside Jupyter?") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as error:
        raise ValueError(f"it is JSON but not a notebook ({type(error).__name__}: {error})"[:300]) from None
    if not isinstance(nb.get("cells"), list):
        raise ValueError("it is JSON but has no list of cells")
    return nb


def _record(path: Path, lesson: Optional[str], status: str, notes: list[str], seeds: list[int],
            tasks: list[dict[str, Any]], started: float) -> dict[str, Any]:
    return {"submission": str(path), "lesson": lesson, "points": sum(t["points"] for t in tasks),
            "max_points": sum(t["max_points"] for t in tasks), "status": status, "notes": notes,
            "seeds": seeds, "tasks": tasks, "seconds": round(time.monotonic() - started, 1)}


def _ungraded_tasks(lesson: Optional[str], why: str) -> list[dict[str, Any]]:
    if lesson is None:
        return []
    return [{"task": t.id, "title": t.title, "points": 0, "max_points": t.points, "status": NOT_GRADED,
             "mistake": None, "feedback": f"· {t.id} · {t.title}: not graded: {why}"} for t in tasks_for_lesson(lesson)]


def grade_submission(path: Path, solutions_dir: Optional[Path], limits: Limits, seeds: list[int],
                     keep: Optional[Path] = None) -> dict[str, Any]:
    """Grade one submission; never raises (a problem becomes the record's status and notes)."""
    started = time.monotonic()
    path = Path(path)
    lesson: Optional[str] = None
    try:
        with tempfile.TemporaryDirectory(prefix="crossmodal-grade-") as tmp:
            copy = Path(tmp) / "submission.ipynb"
            shutil.copyfile(path, copy)  # from here on only the copy is read
            try:
                nb = _read(copy)
            except ValueError as error:
                lesson = _lesson_of(None, path)
                return _record(path, lesson, NOT_GRADED, [f"not a readable notebook: {error}"], seeds,
                               _ungraded_tasks(lesson, "the notebook could not be read"), started)
            lesson = _lesson_of(nb, path)
            if lesson is None:
                why = f"cannot tell which lesson this is (lessons with exercises: {', '.join(lessons())})"
                return _record(path, None, NOT_GRADED, [why], seeds, [], started)
            hidden: dict[str, str] = {}
            notes: list[str] = []
            if solutions_dir is not None:
                solution = next(iter(sorted(Path(solutions_dir).glob(f"{lesson}_*.ipynb"))), None)
                if solution is not None:
                    hidden = hidden_tests(nbformat.read(solution, as_version=4))
            if not hidden:
                notes.append("no hidden tests were run (no solution notebook found)")
            name = re.sub(r"[^\w.-]+", "_", str(path.with_suffix("")))  # unique, for --keep
            tasks, run_notes = run_and_regrade(nb, Path(tmp), lesson, seeds, hidden, limits, keep, name)
            return _record(path, lesson, GRADED, run_notes + notes, seeds, tasks, started)
    except Exception as error:  # the batch goes on, whatever happened to this one
        why = f"the grader failed on this submission: {type(error).__name__}: {error}"
        return _record(path, lesson, NOT_GRADED, [why], seeds, _ungraded_tasks(lesson, why), started)


def _submissions(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def grade_all(paths: list[Path], solutions_dir: Optional[Path] = None, limits: Limits = Limits(),
              seeds: int = 3, seed: Optional[int] = None, jobs: int = 1,
              keep: Optional[Path] = None) -> list[dict[str, Any]]:
    """Grade every notebook in ``paths`` (files, or folders searched recursively), in order."""
    base = secrets.randbelow(10**6) if seed is None else seed
    draws = [int(s % 1_000_000) for s in np.random.SeedSequence(base).generate_state(seeds)]
    submissions = _submissions(paths)
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
    args = [(p, solutions_dir, limits, draws, keep) for p in submissions]
    if jobs <= 1 or len(args) <= 1:
        return [grade_submission(*a) for a in args]
    # A fresh interpreter per worker ("spawn"): kernels and their sockets are never forked.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        return list(pool.map(grade_submission, *zip(*args)))


def _task_order(records: list[dict[str, Any]]) -> list[str]:
    order = {t.id: i for i, t in enumerate(t for lesson in lessons() for t in tasks_for_lesson(lesson))}
    ids = {t["task"] for r in records for t in r["tasks"]}
    return sorted(ids, key=lambda i: order.get(i, len(order)))


def write_reports(records: list[dict[str, Any]], csv_path: Path, json_path: Path) -> None:
    """One CSV row per submission (points and feedback per task), and the full records as JSON."""
    task_ids = _task_order(records)
    header = ["submission", "lesson", "points", "max_points", "status", "notes"]
    for task_id in task_ids:
        header += [f"{task_id} points", f"{task_id} feedback"]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in records:
            by_id = {t["task"]: t for t in r["tasks"]}
            row = [r["submission"], r["lesson"] or "", r["points"], r["max_points"], r["status"],
                   " | ".join(r["notes"])]
            for task_id in task_ids:
                t = by_id.get(task_id)
                row += ["", ""] if t is None else [t["points"], t["feedback"]]
            writer.writerow(row)
    Path(json_path).write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _default_solutions() -> Optional[Path]:
    here = Path(__file__).resolve().parents[1] / "solutions"
    return here if course_notebooks(here) else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossmodal_edu.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders of them")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV report (default grades.csv)")
    parser.add_argument("--json", type=Path, default=None, help="JSON report (default: --out with .json)")
    parser.add_argument("--solutions", type=Path, default=None,
                        help="solution notebooks, for the hidden tests (default: this repository's solutions/)")
    parser.add_argument("--cell-timeout", type=int, default=Limits.cell_timeout, metavar="S",
                        help=f"seconds for each cell, and for checking each task (default {Limits.cell_timeout})")
    parser.add_argument("--notebook-timeout", type=int, default=Limits.notebook_timeout, metavar="S",
                        help=f"seconds for all of a notebook's cells (default {Limits.notebook_timeout})")
    parser.add_argument("--max-output", type=int, default=Limits.max_output, metavar="CHARS",
                        help=f"output kept per cell (default {Limits.max_output} characters)")
    parser.add_argument("--seeds", type=int, default=3, help="extra random seeds per task (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="draw the seeds from this, to regrade identically")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="save each executed copy in this folder")
    args = parser.parse_args(argv)
    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    max_output=args.max_output)
    solutions = args.solutions or _default_solutions()
    records = grade_all(args.submissions, solutions, limits, args.seeds, args.seed, args.jobs, args.keep)
    json_path = args.json or args.out.with_suffix(".json")
    write_reports(records, args.out, json_path)
    width = max((len(r["submission"]) for r in records), default=10)
    for r in records:
        note = f"  ({r['notes'][0]})" if r["notes"] else ""
        print(f"{r['submission']:<{width}}  {r['lesson'] or '??'}  {r['points']:>3}/{r['max_points']:<3} "
              f"{r['status']}{note}")
    print(f"wrote {args.out} and {json_path} ({len(records)} submissions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
