"""Run a submitted notebook in a sandboxed kernel, within time and output limits, then re-check every
task from the judge, outside that kernel: the engine of the class grader (:mod:`crossmodal_edu.grade`).

The kernel is this Python's ipykernel (whatever kernel the notebook names), started through
:mod:`~crossmodal_edu.grading.sandbox` in a folder of its own. A cell past its time limit is interrupted
(``KeyboardInterrupt``) and the next one runs. A learner's cell that kills the kernel or ignores the
interrupt is left out of a second run in a fresh kernel.

Then, task by task, the judge (:func:`~crossmodal_edu.grading.regrade.grade_task`, in this process)
asks the kernel to evaluate the learner's answer on the judge's inputs: each request is one cell
calling :func:`crossmodal_edu.grading.agent.serve`, whose reply, plain data, is read from the kernel's
folder. A check that runs too long is interrupted and reported as timed out; if the kernel ignores the
interrupt or dies, it is replaced by a fresh one (the notebook runs again) for the tasks left.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from crossmodal_edu.grading import wire
from crossmodal_edu.grading.regrade import grade_task
from crossmodal_edu.grading.remote import KernelLost, KernelTimeout
from crossmodal_edu.grading.sandbox import BUBBLEWRAP, Confinement, kernel_argv, prepare_box
from crossmodal_edu.grading.tasks import tasks_for_lesson

__all__ = ["run_and_regrade", "TIMED_OUT", "NOT_GRADED"]

TIMED_OUT = "timed out"
NOT_GRADED = "not graded"


class _SandboxSpecs(KernelSpecManager):
    """Every kernel name means this interpreter's ipykernel, started in the sandbox."""

    argv: list[str] = []

    def get_kernel_spec(self, kernel_name: str):
        return KernelSpec(argv=list(self.argv), display_name="sandboxed Python", language="python",
                          interrupt_mode="message")


class _SandboxManager(AsyncKernelManager):
    """A kernel manager whose connection file the kernel's (unprivileged) user can read."""

    owner: Optional[tuple[int, int]] = None

    def write_connection_file(self, **kwargs):
        super().write_connection_file(**kwargs)
        if self.owner is not None:
            os.chown(self.connection_file, *self.owner)


class _LimitedClient(NotebookClient):
    """nbclient with an output cap per cell, a sandboxed kernel, and a kernel that must stop when
    interrupted."""

    def __init__(self, nb, max_output: int, ids, box: Path, argv: list[str], **kwargs):
        super().__init__(nb, **kwargs)
        self.max_output = max_output
        self.ids, self.box, self.argv = ids, box, argv
        self.sizes: dict[int, int] = {}
        self.truncated: set[int] = set()
        self.interrupted: set[int] = set()  # id() of the cells interrupted

    def create_kernel_manager(self):
        specs = _SandboxSpecs()
        specs.argv = self.argv
        self.km = _SandboxManager(kernel_name="python3", kernel_spec_manager=specs, transport="ipc",
                                  ip=str(self.box / "kernel"), connection_file=str(self.box / "kernel.json"))
        if self.ids[0] is not None:
            self.km.owner = self.ids
        return self.km

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(json.dumps(content, default=str))
        self.sizes[cell_index] = self.sizes.get(cell_index, 0) + size
        if self.sizes[cell_index] > self.max_output:
            if msg.get("msg_type") == "error":  # the error itself is always kept, its traceback cut short
                content["traceback"] = content.get("traceback", [])[-3:]
                return super().output(outs, msg, display_id, cell_index)
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                note = f"[output beyond {self.max_output} characters dropped by the grader]\n"
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def _async_handle_timeout(self, timeout: int, cell=None):
        if id(cell) in self.interrupted:  # interrupted once already, still running: give up on the kernel
            raise CellTimeoutError.error_from_timeout_and_cell("Cell execution timed out", timeout, cell)
        self.interrupted.add(id(cell))
        return await super()._async_handle_timeout(timeout, cell)


def _errors(cell) -> list[tuple[str, str]]:
    return [(o.get("ename", ""), str(o.get("evalue", ""))) for o in cell.get("outputs", [])
            if o.get("output_type") == "error"]


def _describe(index: int, cell) -> str:
    first = next((l.strip() for l in cell.source.splitlines() if l.strip() and not l.strip().startswith("#")), "")
    first = first if len(first) <= 50 else first[:49] + "…"
    return f"cell {index}" + (f" (`{first}`)" if first else "")


def _death(client: _LimitedClient) -> str:
    """Why the kernel died, as far as its exit status tells."""
    try:
        process = client.km.provisioner.process
        process.wait(timeout=2)
        code = process.returncode
    except Exception:
        return "out of memory, or os._exit?"
    if code is None:
        return "out of memory, or os._exit?"
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    named = {int(signal.SIGKILL): "killed: out of memory, or a signal", int(signal.SIGXCPU): "its CPU-time limit",
             int(signal.SIGXFSZ): "a file larger than the limit", int(signal.SIGSEGV): "a segmentation fault"}
    if sig in named:
        return named[sig]
    return f"it exited with status {code}: os._exit, or out of memory?"


class _Session:
    """One sandboxed kernel: the learner's cells, then the judge's requests."""

    def __init__(self, nb, box: Path, confine: Confinement, argv: list[str], env: dict[str, str], limits, ids):
        self.nb, self.box, self.limits = nb, box, limits
        self.client = _LimitedClient(nb, limits.max_output, ids, box, argv, timeout=limits.cell_timeout,
                                     allow_errors=True, interrupt_on_timeout=True, record_timing=False,
                                     startup_timeout=limits.startup_timeout, iopub_timeout=2,
                                     resources={"metadata": {"path": str(box)}})
        self.env = env
        self.deadline = 0.0
        self.scratch = len(nb.cells)
        nb.cells.append(nbformat.v4.new_code_cell(""))  # where the judge's requests run

    def run_cells(self, skip: set[int]) -> tuple[list[str], Optional[str], Optional[int]]:
        """The learner's own cells: (notes, why the kernel was lost, in which cell)."""
        client, limits, notes = self.client, self.limits, []
        deadline = time.monotonic() + limits.notebook_timeout
        own = [(i, c) for i, c in enumerate(self.nb.cells[:self.scratch])
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
                return notes, f"{_describe(index, cell)} ran past the time limit and ignored the interrupt", index
            except DeadKernelError:
                return notes, f"the kernel died in {_describe(index, cell)} ({_death(client)})", index
            if id(cell) in client.interrupted:
                notes.append(f"{_describe(index, cell)} ran past the {client.timeout} s limit for a cell "
                             f"and was interrupted (an infinite loop?)")
            else:
                for ename, evalue in _errors(cell):
                    notes.append(f"{ename} in {_describe(index, cell)}: "
                                 f"{evalue.splitlines()[0][:150] if evalue else ''}")
            if index in client.truncated:
                notes.append(f"{_describe(index, cell)} printed more than {limits.max_output} characters; "
                             f"the rest was dropped")
        return notes, None, None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """One request of the judge, evaluated in the kernel; its reply, read as plain data."""
        remaining = self.deadline - time.monotonic()
        if remaining < 0.5:
            raise KernelTimeout()
        reply_file = self.box / f"reply-{secrets.token_hex(8)}.json"
        cell = nbformat.v4.new_code_cell(
            f"__import__('crossmodal_edu.grading.agent', fromlist=['serve']).serve("
            f"{wire.dumps_request(message)!r}, {str(reply_file)!r})")
        self.client.timeout = int(max(1, remaining))
        try:
            self.client.execute_cell(cell, self.scratch, store_history=False)
        except CellTimeoutError:
            raise KernelLost("ignored the interrupt") from None
        except DeadKernelError:
            raise KernelLost(f"the kernel died ({_death(self.client)})") from None
        reply = _read_reply(reply_file)
        if id(cell) in self.client.interrupted and (reply is None or reply.get("interrupted")):
            raise KernelTimeout()
        if reply is None:
            raise KernelLost("the kernel did not answer (was the grader's code in the kernel changed?)", )
        if reply.get("interrupted"):
            raise KernelTimeout()
        if "failed" in reply:
            raise KernelLost(f"the kernel could not evaluate it: {str(reply['failed'])[:200]}")
        return reply


def _read_reply(path: Path) -> Optional[dict[str, Any]]:
    """The reply at ``path``, if it is a regular file of plain data (never a link, never too large)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > wire.MAX_REPLY_BYTES:
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read(wire.MAX_REPLY_BYTES + 1)
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            path.unlink()
        except OSError:
            pass
    try:
        return wire.loads_reply(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _task_record(task, seeds, status: str, why: str) -> dict[str, Any]:
    return {"task": task.id, "title": task.title, "points": 0, "max_points": task.points, "status": status,
            "mistake": None, "seeds": list(seeds),
            "feedback": f"✗ {task.id} · {task.title}: {status}: {why} (0/{task.points} points)"}


def _kill_leftovers(pid: Optional[int], uid: Optional[int]) -> None:
    """Without a PID namespace: kill the kernel's process group and, when it had a uid of its own, every
    process of that uid (a process that started a session of its own, too)."""
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    if uid is not None:
        try:  # kill(-1) from that uid reaches all its processes, and nothing else
            subprocess.run([sys.executable, "-I", "-S", "-c", "import os; os.kill(-1, 9)"], user=uid, group=uid,
                           extra_groups=[], timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            pass


def run_and_regrade(nb: nbformat.NotebookNode, folder: Path, lesson: str, seeds: list[int],
                    hidden: dict[str, str], limits, keep: Optional[Path] = None, name: str = "submission",
                    imports: str = "", confine: Optional[Confinement] = None,
                    lib: Optional[Path] = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Execute ``nb`` in a sandboxed kernel in ``folder``, then judge the tasks of ``lesson`` from here:
    (task records, notes). Each kernel gets its own folder under ``folder``; all are gone afterwards."""
    tasks = list(tasks_for_lesson(lesson))
    notes: list[str] = []
    skip: set[int] = set()
    records: dict[str, dict[str, Any]] = {}
    run = None
    for attempt in range(4):
        if not any(t.id not in records for t in tasks):
            break
        box = folder / f"kernel-{attempt}"
        ids = confine.kernel_ids()
        prepare_box(box, ids)
        argv, env = kernel_argv(confine, box, lib, limits,
                                {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONWARNINGS": "ignore"},
                                ids)
        run = copy.deepcopy(nb)
        for cell in run.cells:
            if cell.get("cell_type") == "code":
                cell.outputs, cell.execution_count = [], None
        session = _Session(run, box, confine, argv, env, limits, ids)
        pid, lost = None, None
        try:
            with session.client.setup_kernel(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
                process = getattr(session.client.km.provisioner, "process", None)
                pid = process.pid if process is not None and confine.kind != BUBBLEWRAP else None
                run_notes, fatal, fatal_cell = session.run_cells(skip)
                notes += [n for n in run_notes if n not in notes]
                if fatal is not None:
                    skip.add(fatal_cell)
                    again = attempt < 3
                    notes.append(fatal + ("; ran the notebook again in a fresh kernel without that cell" if again
                                          else ""))
                    continue
                for task in tasks:
                    if task.id in records:
                        continue
                    session.deadline = time.monotonic() + limits.cell_timeout
                    try:
                        records[task.id] = grade_task(task, session.request, seeds, hidden.get(task.id, ""),
                                                      imports)
                    except KernelTimeout:
                        records[task.id] = _task_record(task, seeds, TIMED_OUT,
                                                        f"checking it ran past the {limits.cell_timeout} s limit "
                                                        f"(an infinite loop in `{task.name}`, or in a function "
                                                        f"it calls?)")
                    except KernelLost as why:
                        if "ignored the interrupt" in str(why):
                            records[task.id] = _task_record(
                                task, seeds, TIMED_OUT, f"checking it ran past the {limits.cell_timeout} s limit "
                                f"and `{task.name}` ignored the interrupt; the next tasks were checked in a "
                                f"fresh kernel")
                            lost = why
                            break
                        if "died" in str(why):
                            records[task.id] = _task_record(task, seeds, NOT_GRADED,
                                                            f"{why} while checking it")
                            lost = why
                            break
                        records[task.id] = _task_record(task, seeds, NOT_GRADED, str(why))
        except Exception as error:  # the kernel would not start, or nbclient gave up on it
            notes.append(f"the kernel failed: {type(error).__name__}: {str(error)[:200]}")
            break
        finally:
            if confine.kind != BUBBLEWRAP:
                _kill_leftovers(pid, ids[0])
        if lost is None:
            break
    for task in tasks:
        if task.id not in records:
            why = notes[-1] if notes else "its check did not report (see the notes)"
            records[task.id] = _task_record(task, seeds, NOT_GRADED, why)
    if keep is not None and run is not None:
        try:
            saved = copy.deepcopy(run)
            saved.cells = saved.cells[:len(nb.cells)]
            nbformat.write(saved, Path(keep) / f"{name}.graded.ipynb")
        except Exception as error:
            notes.append(f"could not save the executed copy: {error}")
    return [records[t.id] for t in tasks], notes
