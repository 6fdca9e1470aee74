"""Run a submitted notebook in a fresh kernel, within time and output limits, then re-check every
task in that kernel: the engine of the class grader (:mod:`crossmodal_edu.grade`).

The kernel is this Python's own ipykernel (whatever kernel the notebook names), started in a
temporary folder. A cell past its time limit is interrupted (``KeyboardInterrupt``) and the next one
runs. A learner's cell that kills the kernel or ignores the interrupt is left out of a second run in a
fresh kernel; if checking a task does that, the tasks not checked yet are reported as not graded,
with the reason.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import ipykernel.kernelspec
import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from crossmodal_edu.grading.tasks import tasks_for_lesson

__all__ = ["run_and_regrade", "TIMED_OUT", "NOT_GRADED"]

TIMED_OUT = "timed out"
NOT_GRADED = "not graded"


class _ThisPython(KernelSpecManager):
    """Every kernel name means this interpreter's ipykernel, so the course package is importable."""

    def get_kernel_spec(self, kernel_name: str):
        return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                      **ipykernel.kernelspec.get_kernel_dict())


class _LimitedClient(NotebookClient):
    """nbclient with an output cap per cell, and a kernel that must stop when interrupted."""

    def __init__(self, nb, max_output: int, **kwargs):
        super().__init__(nb, **kwargs)
        self.max_output = max_output
        self.sizes: dict[int, int] = {}
        self.truncated: set[int] = set()
        self.interrupted: set[int] = set()

    def create_kernel_manager(self):
        self.km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_ThisPython())
        return self.km

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        self.sizes[cell_index] = self.sizes.get(cell_index, 0) + size
        if self.sizes[cell_index] > self.max_output:
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                note = f"[output beyond {self.max_output} characters dropped by the grader]\n"
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def _async_handle_timeout(self, timeout: int, cell=None):
        index = next((i for i, c in enumerate(self.nb.cells) if c is cell), -1)
        if index in self.interrupted:  # interrupted once already, still running: give up on the kernel
            raise CellTimeoutError.error_from_timeout_and_cell("Cell execution timed out", timeout, cell)
        self.interrupted.add(index)
        return await super()._async_handle_timeout(timeout, cell)


def _errors(cell) -> list[tuple[str, str]]:
    return [(o.get("ename", ""), str(o.get("evalue", ""))) for o in cell.get("outputs", [])
            if o.get("output_type") == "error"]


def _describe(index: int, cell) -> str:
    first = next((l.strip() for l in cell.source.splitlines() if l.strip() and not l.strip().startswith("#")), "")
    first = first if len(first) <= 50 else first[:49] + "…"
    return f"cell {index}" + (f" (`{first}`)" if first else "")


def _run_once(nb: nbformat.NotebookNode, folder: Path, tasks, seeds: list[int], hidden: dict[str, str],
              limits, skip: set[int]) -> tuple[list[str], Optional[str], Optional[int], set[int], Path]:
    """One run in a fresh kernel, without the cells in ``skip``: (notes, fatal, fatal cell, timed-out
    grading cells' task ids, results file)."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell.outputs, cell.execution_count = [], None
    results_file = folder / f"results-{len(skip)}.jsonl"
    notes: list[str] = []
    client = _LimitedClient(nb, limits.max_output, timeout=limits.cell_timeout, allow_errors=True,
                            interrupt_on_timeout=True, record_timing=False,
                            startup_timeout=limits.startup_timeout, iopub_timeout=2,
                            resources={"metadata": {"path": str(folder)}})
    # Inline, so that a saved executed copy (--save) shows the learner's figures.
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline", PYTHONWARNINGS="ignore")
    fatal, fatal_cell, timed_out = None, None, set()
    # The kernel's own warnings (e.g. about unencrypted local sockets) would only clutter the report.
    with client.setup_kernel(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        deadline = time.monotonic() + limits.notebook_timeout
        own = [(i, c) for i, c in enumerate(nb.cells)
               if c.get("cell_type") == "code" and c.source.strip() and i not in skip]
        for position, (index, cell) in enumerate(own):
            remaining = deadline - time.monotonic()
            if remaining < 1:
                notes.append(f"stopped at the {limits.notebook_timeout} s limit for the whole notebook: "
                             f"{len(own) - position} cell(s) from {_describe(index, cell)} on were not run")
                break
            client.timeout = int(max(1, min(limits.cell_timeout, remaining)))
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                fatal = f"{_describe(index, cell)} ran past the time limit and could not be interrupted"
            except DeadKernelError:
                fatal = f"the kernel died in {_describe(index, cell)} (out of memory, or os._exit?)"
            if fatal:
                fatal_cell = index
                break
            if index in client.interrupted:
                notes.append(f"{_describe(index, cell)} ran past the {client.timeout} s limit for a cell "
                             f"and was interrupted (an infinite loop?)")
            else:
                for ename, evalue in _errors(cell):
                    notes.append(f"{_describe(index, cell)} raised {ename}: "
                                 f"{evalue.splitlines()[0][:150] if evalue else ''}")
            if index in client.truncated:
                notes.append(f"{_describe(index, cell)} printed more than {limits.max_output} characters; "
                             f"the rest was dropped")
        if fatal is None:
            for task in tasks:
                code = (f"__import__('crossmodal_edu.grading.regrade', fromlist=['grade_task']).grade_task("
                        f"{task.id!r}, {list(seeds)!r}, {hidden.get(task.id, '')!r}, {str(results_file)!r})")
                nb.cells.append(nbformat.v4.new_code_cell(code))
                client.timeout = limits.cell_timeout
                try:
                    client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
                except CellTimeoutError:
                    fatal = f"checking {task.id} ran past the time limit and could not be interrupted"
                except DeadKernelError:
                    fatal = f"the kernel died while checking {task.id}"
                if len(nb.cells) - 1 in client.interrupted:
                    timed_out.add(task.id)
                if fatal:
                    break
    return notes, fatal, fatal_cell, timed_out, results_file


def run_and_regrade(nb: nbformat.NotebookNode, folder: Path, lesson: str, seeds: list[int],
                    hidden: dict[str, str], limits, keep: Optional[Path] = None,
                    name: str = "submission") -> tuple[list[dict[str, Any]], list[str]]:
    """Execute ``nb`` in ``folder``, then re-check the tasks of ``lesson``: (task records, notes).

    If one of the learner's cells kills the kernel, or cannot be interrupted, the notebook runs
    again in a fresh kernel without that cell (twice at most), so the rest can still be graded.
    """
    tasks = tasks_for_lesson(lesson)
    notes: list[str] = []
    skip: set[int] = set()
    for attempt in range(3):
        run = copy.deepcopy(nb)
        run_notes, fatal, fatal_cell, timed_out, results_file = _run_once(run, folder, tasks, seeds, hidden,
                                                                           limits, skip)
        notes += run_notes
        if fatal and fatal_cell is not None and attempt < 2:
            notes.append(f"{fatal}; ran the notebook again in a fresh kernel without that cell")
            skip.add(fatal_cell)
            continue
        if fatal:
            notes.append(fatal)
        break
    if keep is not None:
        try:
            nbformat.write(run, Path(keep) / f"{name}.graded.ipynb")
        except Exception as error:
            notes.append(f"could not save the executed copy: {error}")

    found = {}
    if results_file.exists():
        for line in results_file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            found[record["task"]] = record
    records = []
    for task in tasks:
        if task.id in found:
            records.append(found[task.id])
            continue
        if task.id in timed_out:
            status, why = TIMED_OUT, (f"checking it ran past the {limits.cell_timeout} s limit "
                                      f"(an infinite loop in `{task.name}`, or in a function it calls?)")
        else:
            status, why = NOT_GRADED, fatal or "its check did not report (see the notes)"
        records.append({"task": task.id, "title": task.title, "points": 0, "max_points": task.points,
                        "status": status, "mistake": None, "seeds": list(seeds),
                        "feedback": f"✗ {task.id} · {task.title}: {status}: {why} (0/{task.points} points)"})
    return records, notes
