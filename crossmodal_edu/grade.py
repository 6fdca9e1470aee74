"""Grade a class: run every submitted exercise notebook and re-check every task.

.. code-block:: bash

    python -m crossmodal_edu.grade submissions/ --out grades.csv          # also writes grades.json
    python -m crossmodal_edu.grade alice.ipynb bob.ipynb --out grades.csv --jobs 4

Two rooms, as autograders that instructors trust are built:

1. **the learner's kernel**, one per submission, in a sandbox (:mod:`crossmodal_edu.grading.sandbox`:
   bubblewrap where available, else resource limits and an unprivileged user). It sees a read-only copy of
   the course package and its own folder, nothing else of this machine (no ``solutions/``, no other
   submission). The notebook's cells run there one by one with nbclient, each with a time limit
   (``--cell-timeout``) and all together with another (``--notebook-timeout``); a cell that runs too long is
   interrupted and the next one runs; output beyond ``--max-output`` characters per cell is dropped;
2. **the judge**, this process. For every task of the lesson it asks the kernel to evaluate the learner's
   function on the judge's inputs (``--seeds`` seeds, the same for the whole class) and gets back plain data
   (arrays as ``.npy`` bytes, numbers, strings). References, comparisons, the diagnosis of mistakes, the
   instructor's hidden tests (from ``--solutions``) and the points run here; points and maxima come from
   the task specs, never from the kernel.

Submissions are checked before anything runs (regular files only, at most ``--max-size`` bytes, valid
nbformat); the lesson is decided by the notebook's check cells and file name (a note says when its
metadata disagrees). The report has one row per submission: points, a status, notes (cells that failed or
ran too long, a notebook that could not be read, an answer that calls the package's reference ...) and, per
task, points and the feedback text the learner would see. A broken submission gets a clear line and never
costs another one anything; the reports are written at the end, atomically, by this process only.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
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
from crossmodal_edu.grading.sandbox import Confinement, confinement, stage_package
from crossmodal_edu.grading.tasks import lessons, tasks_for_lesson

__all__ = ["Limits", "grade_submission", "grade_all", "write_reports", "hidden_tests", "solution_imports", "main"]

GRADED = "graded"


@dataclass(frozen=True)
class Limits:
    cell_timeout: int = 60  # seconds for each cell, and for checking each task
    notebook_timeout: int = 600  # seconds for all of a submission's own cells together
    max_output: int = 100_000  # characters of output kept per cell
    startup_timeout: int = 60  # seconds for a kernel to start
    max_size: int = 20 * 2**20  # bytes a submitted notebook may have
    memory_mb: int = 4096  # memory each kernel process may allocate (its data limit on Linux)
    cpu_seconds: int = 1800  # CPU time of each kernel process
    file_mb: int = 256  # the largest file a kernel may write
    processes: int = 256  # processes (and threads) of the kernels' user


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


def solution_imports(solution: nbformat.NotebookNode) -> str:
    """The solution notebook's top-level imports: the names its hidden tests may use besides the learner's
    functions (``np``, ``torch``, ``CrossAttention`` ...). They run in the judge, never in a kernel."""
    lines = []
    for cell in solution.cells:
        if cell.cell_type != "code" or BEGIN_HIDDEN in cell.source:
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        lines += [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(lines))


def _checked_lessons(nb: nbformat.NotebookNode) -> Counter:
    known = lessons()
    ids = re.findall(rf"""check\(\s*["']({LESSON_ID})\.""",
                     "\n".join(c.get("source", "") for c in nb.get("cells", []) if c.get("cell_type") == "code"
                               and isinstance(c.get("source"), str)))
    return Counter(i for i in ids if i in known)


def _lesson_of(nb: Optional[nbformat.NotebookNode], path: Path) -> tuple[Optional[str], list[str]]:
    """The lesson, decided by the course: the notebook's check cells, else its file name (never its metadata,
    which anyone can edit); and a note when the metadata or the file name disagrees."""
    known, notes = lessons(), []
    by_name = notebook_id(path) if notebook_id(path) in known else None
    counts = _checked_lessons(nb) if nb is not None else Counter()
    lesson = counts.most_common(1)[0][0] if counts else by_name
    meta = None
    if nb is not None:
        meta = (nb.get("metadata", {}).get("crossmodal_edu") or {}).get("lesson")
    if lesson is not None and meta is not None and str(meta) != lesson:
        notes.append(f"the notebook's metadata names lesson {str(meta)[:10]!r}, but its check cells and file name "
                     f"make it lesson {lesson}: graded as lesson {lesson}")
    if lesson is not None and by_name is not None and by_name != lesson:
        notes.append(f"the file name says lesson {by_name}, but its check cells are lesson {lesson}'s: "
                     f"graded as lesson {lesson}")
    return lesson, notes


_INTERNALS = re.compile(r"crossmodal_edu\.grading\.(agent|judge|regrade|remote|wire|spec|runner|sandbox|tasks)"
                        r"|\bgrading\s+import\s+.*\b(judge|get_task|all_tasks|tasks_for_lesson)\b"
                        r"|\b(get_task|all_tasks|tasks_for_lesson|_SESSION|checked_answer)\b")


def _copy_notes(nb: nbformat.NotebookNode, lesson: str, given: str) -> list[str]:
    """Notes on code that uses the package's reference of a task of ``lesson``, or reaches into the grader's
    own code, read from the notebook's source (lines the exercise notebook itself has, ``given``, excepted).
    A heuristic that a determined learner can hide from; the kernel watches the calls too."""
    lines = set(line.strip() for line in given.splitlines())
    source = [line for c in nb.cells if c.get("cell_type") == "code" and isinstance(c.get("source"), str)
              for line in c.source.splitlines() if line.strip() and line.strip() not in lines]
    references = {}
    for task in tasks_for_lesson(lesson):
        reference = getattr(task, "reference", None)
        if getattr(reference, "__module__", "").startswith("crossmodal_edu"):
            references.setdefault(reference.__name__, task.id)
    text = "\n".join(source)
    aliases = set(re.findall(r"import\s+crossmodal_edu[\w.]*\s+as\s+(\w+)", text))
    aliases |= set(re.findall(r"from\s+crossmodal_edu[\w.]*\s+import\s+\w+\s+as\s+(\w+)", text))
    aliases |= set(re.findall(r"from\s+crossmodal_edu[\w.]*\s+import\s+(\w+)\s*$", text, flags=re.MULTILINE))
    aliases.add("crossmodal_edu")
    notes = []
    for line in source:
        if _INTERNALS.search(line):
            notes.append(f"the notebook reaches into the grader's own code: `{line.strip()[:80]}`")
            continue
        for name, task_id in references.items():
            imported = re.search(rf"from\s+crossmodal_edu[\w.]*\s+import\s+.*\b{name}\b", line)
            used = re.search(rf"\b({'|'.join(map(re.escape, aliases))})(\.\w+)*\.{name}\b", line)
            if imported or used:
                notes.append(f"{task_id}: the notebook uses the package's reference `{name}`: "
                             f"`{line.strip()[:80]}`")
    return list(dict.fromkeys(notes))[:5]


def _read_submission(path: Path, max_size: int) -> bytes:
    """The bytes of a submitted notebook, or a ``ValueError`` saying why it is not read: only a regular file
    (no link, device or FIFO) of at most ``max_size`` bytes."""
    try:
        info = os.lstat(path)
    except OSError as error:
        raise ValueError(f"it cannot be read ({error.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise ValueError("it is a symbolic link, not a file (submissions must be plain files)")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("it is not a regular file (a device, a FIFO or a folder?)")
    if info.st_size > max_size:
        raise ValueError(f"it is {info.st_size} bytes, more than the {max_size} a submission may have")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("it is not a regular file")
        data = f.read(max_size + 1)
    if len(data) > max_size:
        raise ValueError(f"it is more than the {max_size} bytes a submission may have")
    return data


def _parse(data: bytes) -> nbformat.NotebookNode:
    """The notebook in ``data``, or a ``ValueError`` saying in words why it cannot be one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"it is not valid JSON ({error.msg}, line {error.lineno}, column {error.colno}): "
                         f"cut off, or edited outside Jupyter?") from None
    except RecursionError:
        raise ValueError("it is JSON nested too deep to be a notebook") from None
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as error:
        raise ValueError(f"it is JSON but not a valid notebook ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})"[:300]) from None
    if not isinstance(nb.get("cells"), list):
        raise ValueError("it is JSON but has no list of cells")
    return nb


def _record(path: Path, lesson: Optional[str], status: str, notes: list[str], seeds: list[int],
            tasks: list[dict[str, Any]], started: float, confine: Optional[Confinement] = None) -> dict[str, Any]:
    # Points and maxima are summed here, from records the judge made with the task specs' points.
    return {"submission": str(path), "lesson": lesson, "points": sum(int(t["points"]) for t in tasks),
            "max_points": sum(int(t["max_points"]) for t in tasks), "status": status, "notes": notes,
            "seeds": seeds, "tasks": tasks, "seconds": round(time.monotonic() - started, 1),
            "sandbox": confine.describe() if confine is not None else None}


def _ungraded_tasks(lesson: Optional[str], why: str) -> list[dict[str, Any]]:
    if lesson is None:
        return []
    return [{"task": t.id, "title": t.title, "points": 0, "max_points": t.points, "status": NOT_GRADED,
             "mistake": None, "feedback": f"· {t.id} · {t.title}: not graded: {why}"} for t in tasks_for_lesson(lesson)]


def grade_submission(path: Path, solutions_dir: Optional[Path], limits: Limits, seeds: list[int],
                     keep: Optional[Path] = None, confine: Optional[Confinement] = None,
                     lib: Optional[Path] = None) -> dict[str, Any]:
    """Grade one submission; never raises (a problem becomes the record's status and notes)."""
    started = time.monotonic()
    path = Path(path)
    lesson: Optional[str] = None
    staged = None
    try:
        confine = confine or confinement()
        if lib is None:
            staged = Path(tempfile.mkdtemp(prefix="crossmodal-lib-"))
            lib = stage_package(staged)
        try:
            nb = _parse(_read_submission(path, limits.max_size))
        except ValueError as error:
            lesson, _ = _lesson_of(None, path)
            return _record(path, lesson, NOT_GRADED, [f"not a readable notebook: {error}"], seeds,
                           _ungraded_tasks(lesson, "the notebook could not be read"), started, confine)
        lesson, notes = _lesson_of(nb, path)
        if lesson is None:
            why = f"cannot tell which lesson this is (lessons with exercises: {', '.join(lessons())})"
            return _record(path, None, NOT_GRADED, notes + [why], seeds, [], started, confine)
        hidden: dict[str, str] = {}
        imports = ""
        if solutions_dir is not None:
            solution = next(iter(sorted(Path(solutions_dir).glob(f"{lesson}_*.ipynb"))), None)
            if solution is not None:
                solution_nb = nbformat.read(solution, as_version=4)
                hidden, imports = hidden_tests(solution_nb), solution_imports(solution_nb)
        if not hidden:
            notes.append("no hidden tests were run (no solution notebook found)")
        name = re.sub(r"[^\w.-]+", "_", str(path.with_suffix("")))  # unique, for --keep
        with tempfile.TemporaryDirectory(prefix="crossmodal-grade-") as tmp:
            os.chmod(tmp, 0o755)  # the kernel's user must reach its own folder inside
            tasks, run_notes = run_and_regrade(nb, Path(tmp), lesson, seeds, hidden, limits, keep, name,
                                               imports, confine, lib)
        copied = [f"{t['task']}: {t['copied']}" for t in tasks if t.get("copied")]
        exercise = (Path(solutions_dir).parent / "exercises") if solutions_dir is not None else None
        given = ""
        if exercise is not None:
            found = next(iter(sorted(exercise.glob(f"{lesson}_*.ipynb"))), None)
            if found is not None:
                given = "\n".join(c.source for c in nbformat.read(found, as_version=4).cells if c.cell_type == "code")
        copied += _copy_notes(nb, lesson, given)
        return _record(path, lesson, GRADED, notes + run_notes + copied, seeds, tasks, started, confine)
    except Exception as error:  # the batch goes on, whatever happened to this one
        why = f"the grader failed on this submission: {type(error).__name__}: {error}"
        return _record(path, lesson, NOT_GRADED, [why], seeds, _ungraded_tasks(lesson, why), started, confine)
    finally:
        if staged is not None:
            _remove(staged)


def _remove(folder: Path) -> None:
    """Remove a folder, read-only parts (the staged package) included."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o755)
            except OSError:
                pass
    try:
        os.chmod(folder, 0o755)
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _submissions(paths: list[Path]) -> list[Path]:
    """Every ``.ipynb`` in ``paths`` (files, or folders searched without following links)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
                found += [Path(root) / f for f in sorted(files) if f.endswith(".ipynb")]
        else:
            found.append(path)
    return found


def _one(args) -> dict[str, Any]:
    return grade_submission(*args)


def grade_all(paths: list[Path], solutions_dir: Optional[Path] = None, limits: Limits = Limits(),
              seeds: int = 3, seed: Optional[int] = None, jobs: int = 1,
              keep: Optional[Path] = None, sandbox: str = "auto") -> list[dict[str, Any]]:
    """Grade every notebook in ``paths`` (files, or folders searched recursively), in order."""
    base = secrets.randbelow(10**6) if seed is None else seed
    draws = [int(s % 1_000_000) for s in np.random.SeedSequence(base).generate_state(seeds)]
    submissions = _submissions(paths)
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
    confine = confinement(sandbox)
    staged = Path(tempfile.mkdtemp(prefix="crossmodal-lib-"))
    try:
        lib = stage_package(staged)
        args = [(p, solutions_dir, limits, draws, keep, confine, lib) for p in submissions]
        if jobs <= 1 or len(args) <= 1:
            return [grade_submission(*a) for a in args]
        # A fresh interpreter per worker ("spawn"): kernels and their sockets are never forked.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_one, a) for a in args]
            records = []
            for a, future in zip(args, futures):
                try:
                    records.append(future.result())
                except Exception as error:  # a worker lost: this submission's line says so, the rest go on
                    why = f"the grader's worker failed on this submission: {type(error).__name__}: {error}"
                    records.append(_record(a[0], None, NOT_GRADED, [why], draws, [], time.monotonic(), confine))
            return records
    finally:
        _remove(staged)


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
    with _atomic(csv_path, newline="") as f:
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
    with _atomic(json_path) as f:
        f.write(json.dumps(records, indent=1, ensure_ascii=False) + "\n")


@contextmanager
def _atomic(path: Path, newline: Optional[str] = None):
    """Write ``path`` all at once: into a temporary file beside it, renamed over it when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", newline=newline, encoding="utf-8") as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    parser.add_argument("--sandbox", choices=("auto", "bubblewrap", "limits"), default="auto",
                        help="how kernels are confined: the strongest available (default), bubblewrap or fail, "
                             "or resource limits only")
    parser.add_argument("--memory", type=int, default=Limits.memory_mb, metavar="MB",
                        help=f"memory each kernel process may allocate (default {Limits.memory_mb} MB)")
    parser.add_argument("--max-size", type=int, default=Limits.max_size, metavar="BYTES",
                        help=f"largest submission read (default {Limits.max_size} bytes)")
    args = parser.parse_args(argv)
    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    max_output=args.max_output, memory_mb=args.memory, max_size=args.max_size,
                    cpu_seconds=max(Limits.cpu_seconds, 3 * args.notebook_timeout))
    solutions = args.solutions or _default_solutions()
    confine = confinement(args.sandbox)
    print(f"kernels run in a sandbox: {confine.describe()}")
    for gap in confine.unprotected():
        print(f"  not protected here: {gap}")
    records = grade_all(args.submissions, solutions, limits, args.seeds, args.seed, args.jobs, args.keep,
                        args.sandbox)
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
