"""The class grader against submissions that attack it, one per family of attack (issue 15).

Every submission here is a lesson-01 notebook (the exercise, or its solution) with cells added by a learner
who wants a better grade, or who wants to hurt the batch:

* **full marks without answers**: replacing the grading functions and the task specs in the kernel's
  package, patching NumPy's comparisons, hiding ``exec`` from the hidden tests, forging the results file,
  answers whose conversion to arrays lies, and a forged kernel-side agent;
* **changes that reach later submissions and later runs**: writing into the course package, its task
  catalogue, ``solutions/``, site-packages (a ``.pth`` file);
* **tampering with classmates and the report**: overwriting the other submissions (directly and found
  through ``/proc``), writing the report, a detached process that rewrites it after the grader exits;
* **breaking the batch**: killing the grader and the kernel's own group, recursion, memory exhaustion,
  a flood of output, a swarm of processes, an answer that ignores SIGINT, a symlink to ``/dev/zero``, a
  FIFO, an oversized file, metadata that names another lesson.

Each test checks the grade (what the submission deserves), that submissions and the course's files are
byte-identical afterwards, and that nothing was written outside the output folder and the temporary
folders, which are gone. Where this machine's sandbox cannot stop a family (no bubblewrap, not root), the
test skips and says so: it never passes silently.
"""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from crossmodal_edu.grading.sandbox import BUBBLEWRAP, confinement

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_01 = ROOT / "solutions" / "01_attention_in_numpy.ipynb"
EXERCISE_01 = ROOT / "exercises" / "01_attention_in_numpy.ipynb"
# Generous: lesson 01's cells are tiny, but a kernel's first check() imports PyTorch (the task catalogue), which
# takes seconds on a busy machine. Met only by the answer that ignores SIGINT (it costs two of these).
CELL_TIMEOUT = 20
MARKERS = [Path("/tmp/crossmodal-attack-pth"), Path("/tmp/crossmodal-attack-late"), Path("/tmp/crossmodal-attack-daemon")]

FORGE = r'''
import builtins, json, sys
import numpy as np
import crossmodal_edu.grading as grading
import crossmodal_edu.grading.judge as judge_module
from crossmodal_edu.grading.result import Result
from crossmodal_edu.grading.tasks import all_tasks

def everything_passes(task, answer, seed=None):
    return Result(task.id, task.title, "passed", 4000, 12, "passed")

for name, module in list(sys.modules.items()):
    if name.startswith("crossmodal_edu.grading") and hasattr(module, "judge"):
        module.judge = everything_passes
for task in all_tasks():
    object.__setattr__(task, "points", 4000)
    if hasattr(task, "reference"):
        object.__setattr__(task, "reference", lambda *args, **kwargs: None)
np.allclose = lambda *args, **kwargs: True
np.testing.assert_allclose = lambda *args, **kwargs: None
np.array_equal = lambda *args, **kwargs: True
np.exp = lambda z: z
for name in ("results-0.jsonl", "results-1.jsonl", "../results-0.jsonl", "grades.json"):
    try:
        with open(name, "a") as f:
            f.write(json.dumps({"task": "01.softmax", "points": 4000, "max_points": 12}) + "\n")
            f.write(json.dumps({"task": "01.attention", "status": "passed"}) + "\n")  # no "feedback"
    except OSError as error:
        print("could not write", name, error)

class Liar:
    """Says it equals anything; its conversion to an array lies."""
    def __init__(self, shape=()):
        self.shape = shape
    def __eq__(self, other):
        return True
    def __array__(self, dtype=None, copy=None):
        return np.full(self.shape, 0.5)
    def __float__(self):
        return 8.0
print("forged")
'''
LIARS = {"ex01-03": "def softmax(z, axis=-1):\n    return Liar(np.shape(z))",
         "ex01-06": "predicted_std = Liar()",
         "ex01-10": "def attention(q, k, v):\n    return Liar(), Liar()"}

AGENT = r'''
import base64, io, json, os
import numpy as np
import crossmodal_edu.grading.agent as agent

calls = []

def serve(request, reply_file):
    """A forged kernel-side agent: a different lie for every request."""
    calls.append(1)
    lie = len(calls) % 4
    if lie == 0:
        reply = {"found": True, "callable": False, "points": 4000, "max_points": 12, "status": "passed",
                 "value": {"t": "object", "type": "Result", "repr": "passed"}}
    elif lie == 1:
        os.symlink("/etc/passwd", reply_file)
        return
    elif lie == 2:
        with open(reply_file, "w") as f:
            f.write("{not json")
        return
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
        reply = {"found": True, "callable": False,
                 "value": {"t": "ndarray", "npy": base64.b64encode(buffer.getvalue()).decode()}}
    with open(reply_file, "w") as f:
        json.dump(reply, f)

agent.serve = serve
'''

# Skips every exec of code that looks like the hidden tests (the learner's own cells still run).
NO_EXEC = r'''
import builtins
_real_exec = builtins.exec

def _exec(code, *args, **kwargs):
    if "hidden tests" in getattr(code, "co_filename", ""):  # what the old grader named them
        return None
    return _real_exec(code, *args, **kwargs)

builtins.exec = _exec
'''

COPY_SOFTMAX = r'''
import crossmodal_edu.numpy_attention as na

def softmax(z, axis=-1):
    return na.softmax(z, axis=axis)
'''
COPY_ATTENTION = "attention = na.scaled_dot_product_attention"

TAMPER = r'''
import glob, os, pathlib, signal, site, subprocess, sys, time
ROOT, SUBMISSIONS, OUT = pathlib.Path({root!r}), pathlib.Path({submissions!r}), pathlib.Path({out!r})
import crossmodal_edu
PACKAGE = pathlib.Path(crossmodal_edu.__file__).parent
done = []

def attempt(what, action):
    try:
        action()
        done.append(what)
    except BaseException as error:
        print("blocked:", what, type(error).__name__)

def through_proc():
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for link in glob.glob(f"/proc/{{pid}}/fd/*") + [f"/proc/{{pid}}/cwd"]:
            try:
                target = pathlib.Path(os.readlink(link))
            except OSError:
                continue
            for path in [target] + list(target.glob("*.ipynb")) if target.is_dir() else [target]:
                if path.suffix == ".ipynb" and path.parent == SUBMISSIONS:
                    path.write_text("{{}}")
                    found.append(path)
    if not found:
        raise FileNotFoundError("no submission found through /proc")

def detached():
    subprocess.Popen(["/bin/sh", "-c", f"sleep 3; echo hacked > {{OUT}}/grades.csv; echo hacked > {{OUT}}/grades.json; "
                      f"touch /tmp/crossmodal-attack-late"], start_new_session=True)

def daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(3)
            for path in (OUT / "grades.csv", OUT / "grades.json", pathlib.Path("/tmp/crossmodal-attack-daemon")):
                try:
                    path.write_text("hacked")
                except OSError:
                    pass
            os._exit(0)
        os._exit(0)

attempt("write a task catalogue", lambda: (ROOT / "crossmodal_edu/grading/tasks/lesson01.py").write_text("TASKS = ()\n"))
attempt("delete regrade.py", lambda: (ROOT / "crossmodal_edu/grading/regrade.py").unlink())
attempt("write a solution", lambda: (ROOT / "solutions/01_attention_in_numpy.ipynb").write_text("{{}}"))
attempt("delete a solution", lambda: (ROOT / "solutions/02_cross_modal_attention.ipynb").unlink())
attempt("write the kernel's package", lambda: (PACKAGE / "grading/tasks/lesson01.py").write_text("TASKS = ()\n"))
for folder in site.getsitepackages() + [site.getusersitepackages()]:
    attempt("drop a .pth", lambda: (pathlib.Path(folder) / "zz_crossmodal_attack.pth").write_text(
        "import os; open('/tmp/crossmodal-attack-pth', 'w')\n"))
attempt("overwrite a classmate", lambda: [p.write_text("{{}}") for p in SUBMISSIONS.glob("*.ipynb")] or 1 / 0)
attempt("delete a classmate", lambda: (SUBMISSIONS / "zz_blank.ipynb").unlink())
attempt("find classmates through /proc", through_proc)
attempt("write the report", lambda: (OUT / "grades.csv").write_text("hacked"))
attempt("signal the grader", lambda: os.kill(os.getppid(), signal.SIGKILL))
detached()  # these two act later: the test looks for what they did after the grader exits
daemon()
print("DONE:", done)
'''

FAULTS = {
    "recursion": "def deeper(n):\n    return deeper(n + 1)\n\ndeeper(0)",
    "memory": "hoard = bytearray(64 * 2**30)",
    "flood": "print('x' * 3_000_000)",
    "swarm": ("import subprocess\nswarm = []\nwhile len(swarm) < 5000:\n"
              "    swarm.append(subprocess.Popen(['sleep', '600']))"),
}

KILL = "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\nos.killpg(0, signal.SIGKILL)"

IGNORES_SIGINT = '''import signal

def attention(q, k, v):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pass
'''


def _notebook(base: Path, target: Path, extra: list[str] = (), edits: dict = None, drop: tuple = (),
              metadata_lesson=None) -> None:
    nb = nbformat.read(base, as_version=4)
    for cell in nb.cells:
        if edits and cell.get("id") in edits:
            cell.source = edits[cell.id]
    nb.cells = [c for c in nb.cells if c.get("id") not in drop]
    at = next(i for i, c in enumerate(nb.cells) if c.get("id") == "ex01-01") + 1
    nb.cells[at:at] = [nbformat.v4.new_code_cell(source) for source in extra]
    if metadata_lesson is not None:
        nb.metadata.setdefault("crossmodal_edu", {})["lesson"] = metadata_lesson
    nbformat.write(nb, target)


def _check_cell(task_id: str) -> str:
    nb = nbformat.read(EXERCISE_01, as_version=4)
    return next(c.id for c in nb.cells if c.cell_type == "code" and f'check("{task_id}"' in c.source)


def _tree(folder: Path) -> dict:
    """Every file under ``folder`` (bytecode caches aside) with its digest."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if "__pycache__" in path.parts or ".pytest_cache" in path.parts or path.is_dir():
            continue
        out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "?"
    return out


def _course() -> dict:
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    return {"package": _tree(ROOT / "crossmodal_edu"), "solutions": _tree(ROOT / "solutions"),
            "exercises": _tree(ROOT / "exercises"), "site-packages": sorted(p.name for p in site.iterdir())}


SANDBOX = os.environ.get("CROSSMODAL_GRADER_SANDBOX", "auto")  # "limits": what the grader does without bubblewrap


def _grade(folder: Path, out: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "crossmodal_edu.grade", str(folder), "--out", str(out / "grades.csv"), "--jobs", "2",
         "--cell-timeout", str(CELL_TIMEOUT), "--notebook-timeout", "120", "--seeds", "2", "--seed", "11",
         "--memory", "3072", "--max-size", str(3 * 2**20), "--keep", str(out / "kept"), "--sandbox", SANDBOX, *extra],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def _strays() -> list[str]:
    """Processes a submission left behind: its marked commands, or kernels still running."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "crossmodal-attack" in cmdline or "sleep 600" in cmdline:
            found.append(f"{pid}: {cmdline[:100]}")
    return found


@pytest.fixture(scope="module")
def attacked():
    for marker in MARKERS:
        marker.unlink(missing_ok=True)
    base = Path(tempfile.mkdtemp(prefix="crossmodal-attack-test-"))
    os.chmod(base, 0o755)
    folder, out, tmp, out2 = base / "submissions", base / "out", base / "tmp", base / "out2"
    for path in (folder, out, tmp, out2):
        path.mkdir()
        os.chmod(path, 0o755)
    check_cell = _check_cell("01.attention")
    _notebook(EXERCISE_01, folder / "forge.ipynb", [FORGE], edits=LIARS)
    _notebook(EXERCISE_01, folder / "agent.ipynb", [AGENT])
    softmax_2d = nbformat.read(SOLUTION_01, as_version=4)  # right on every public check, wrong on a hidden test
    softmax_2d = next(c.source for c in softmax_2d.cells if c.get("id") == "ex01-03").replace(  # (it singles
        "    ### BEGIN SOLUTION",  # out the hidden test's own input: the public checks fail anything more general)
        "    if np.shape(z) == (1, 2):\n        return np.full((1, 2), 0.5)\n    ### BEGIN SOLUTION")
    _notebook(SOLUTION_01, folder / "no_exec.ipynb", [NO_EXEC], edits={"ex01-03": softmax_2d})
    _notebook(EXERCISE_01, folder / "copy.ipynb", [], edits={"ex01-03": COPY_SOFTMAX, "ex01-10": COPY_ATTENTION})
    _notebook(SOLUTION_01, folder / "tamper.ipynb",
              [TAMPER.format(root=str(ROOT), submissions=str(folder), out=str(out))])
    _notebook(SOLUTION_01, folder / "kill.ipynb", [KILL])
    _notebook(SOLUTION_01, folder / "faults.ipynb", list(FAULTS.values()))
    _notebook(SOLUTION_01, folder / "sigint.ipynb", [], drop=(check_cell,),
              edits={"ex01-10": IGNORES_SIGINT})
    _notebook(EXERCISE_01, folder / "wrong_meta.ipynb", [], metadata_lesson="02")
    shutil.copyfile(EXERCISE_01, folder / "zz_blank.ipynb")
    (folder / "dev_zero.ipynb").symlink_to("/dev/zero")
    (folder / "link_to_classmate.ipynb").symlink_to(folder / "tamper.ipynb")
    os.mkfifo(folder / "fifo.ipynb")
    (folder / "big.ipynb").write_bytes(SOLUTION_01.read_bytes() + b" " * (4 * 2**20))
    for path in folder.iterdir():
        if not path.is_symlink() and path.is_file():
            os.chmod(path, 0o644)

    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
              if p.is_file() and not p.is_symlink()}
    course = _course()
    started = time.monotonic()
    run = _grade(folder, out, tmp)
    seconds = time.monotonic() - started
    reports = {name: (out / name).read_bytes() for name in ("grades.csv", "grades.json")}
    # A later run, on a blank notebook alone: nothing of the batch before may reach it.
    later_folder = base / "later"
    later_folder.mkdir()
    shutil.copyfile(EXERCISE_01, later_folder / "blank.ipynb")
    os.chmod(later_folder, 0o755)
    later = _grade(later_folder, out2, tmp)
    time.sleep(5)  # the detached writers wait 3 s
    result = {
        "run": run, "later": later, "seconds": seconds, "base": base, "folder": folder, "out": out, "tmp": tmp,
        "records": {Path(r["submission"]).name: r for r in json.loads(reports["grades.json"])},
        "later_records": json.loads((out2 / "grades.json").read_text()),
        "reports": reports, "reports_after": {name: (out / name).read_bytes() for name in reports},
        "before": before, "after": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()
                                    if p.is_file() and not p.is_symlink()},
        "course": course, "course_after": _course(), "strays": _strays(),
        "markers": [str(m) for m in MARKERS if m.exists()], "confine": confinement(SANDBOX),
    }
    yield result
    for marker in MARKERS:
        marker.unlink(missing_ok=True)
    shutil.rmtree(base, ignore_errors=True)


def _tasks(record):
    return {t["task"]: t for t in record["tasks"]}


def _needs(confine, *gaps):
    """Skip, saying so, where this machine's sandbox leaves an attack family unprotected."""
    missing = [g for g in confine.unprotected() if any(word in g for word in gaps)]
    if missing:
        pytest.skip(f"not stopped on this machine ({confine.describe()}): {'; '.join(missing)}")


def test_the_batch_finishes_and_reports_every_submission(attacked):
    assert attacked["run"].returncode == 0, attacked["run"].stderr[-3000:]
    assert len(attacked["records"]) == 14
    assert "kernels run in a sandbox:" in attacked["run"].stdout


def test_forged_grading_functions_specs_comparisons_and_results_give_nothing(attacked):
    record = attacked["records"]["forge.ipynb"]
    assert (record["status"], record["points"], record["max_points"]) == ("graded", 0, 10), record
    assert all(t["status"] != "passed" for t in record["tasks"])
    assert {t["max_points"] for t in record["tasks"]} == {1, 3}  # from the judge's specs, not the kernel's
    tasks = _tasks(record)
    assert "returned a Liar" in tasks["01.softmax"]["feedback"], tasks["01.softmax"]["feedback"]
    assert "a Liar" in tasks["01.score_std"]["feedback"], tasks["01.score_std"]["feedback"]


def test_a_forged_agent_in_the_kernel_gives_nothing(attacked):
    record = attacked["records"]["agent.ipynb"]
    assert (record["status"], record["points"], record["max_points"]) == ("graded", 0, 10), record
    assert any(t["status"] == "not graded" for t in record["tasks"])


def test_wrapping_exec_does_not_skip_the_hidden_tests(attacked):
    record = attacked["records"]["no_exec.ipynb"]
    softmax = _tasks(record)["01.softmax"]
    assert softmax["status"] == "failed" and "Hidden test: softmax([0, log 3]) must be [1/4, 3/4]" in softmax["feedback"]
    assert (record["points"], record["max_points"]) == (7, 10), record


def test_an_answer_that_is_or_calls_the_reference_is_noted(attacked):
    record = attacked["records"]["copy.ipynb"]
    tasks = _tasks(record)
    assert tasks["01.softmax"]["status"] == "passed" and tasks["01.attention"]["status"] == "passed"
    notes = " | ".join(record["notes"])
    assert "01.softmax" in notes and "01.attention" in notes and "reference" in notes


def test_the_course_and_site_packages_are_unchanged_and_later_submissions_unaffected(attacked):
    _needs(attacked["confine"], "writing files the grader")
    assert attacked["course_after"] == attacked["course"]
    blank = attacked["records"]["zz_blank.ipynb"]
    assert (blank["points"], blank["max_points"]) == (0, 10)
    assert {t["status"] for t in blank["tasks"]} == {"not attempted"}
    later = attacked["later_records"][0]
    assert attacked["later"].returncode == 0, attacked["later"].stderr[-2000:]
    assert (later["points"], later["max_points"]) == (0, 10)
    assert {t["status"] for t in later["tasks"]} == {"not attempted"}


def test_a_tampering_submission_gets_what_it_deserves_and_reaches_nothing(attacked):
    _needs(attacked["confine"], "writing files the grader")
    record = attacked["records"]["tamper.ipynb"]
    assert (record["status"], record["points"], record["max_points"]) == ("graded", 10, 10), record
    kept = nbformat.read(attacked["out"] / "kept" / next(
        p.name for p in (attacked["out"] / "kept").iterdir() if "tamper" in p.name), as_version=4)
    printed = "".join(o.get("text", "") for c in kept.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "DONE: []" in printed, printed[-2000:]


def test_classmates_and_the_report_are_untouched_even_after_the_grader_exits(attacked):
    _needs(attacked["confine"], "writing files the grader", "signalling")
    assert attacked["after"] == attacked["before"]
    assert attacked["reports_after"] == attacked["reports"]
    assert b"hacked" not in attacked["reports"]["grades.csv"]
    assert not attacked["strays"], attacked["strays"]


def test_nothing_is_written_outside_the_kernels_folder(attacked):
    _needs(attacked["confine"], "anyone may write")
    assert not attacked["markers"], attacked["markers"]


def test_nothing_is_left_in_the_temporary_folder(attacked):
    assert list(attacked["tmp"].iterdir()) == []
    assert sorted(p.name for p in attacked["out"].iterdir()) == ["grades.csv", "grades.json", "kept"]


def test_a_kernel_that_kills_its_group_is_rerun_without_that_cell(attacked):
    _needs(attacked["confine"], "signalling")  # else its os.kill(os.getppid(), 9) reaches the grader
    record = attacked["records"]["kill.ipynb"]
    assert (record["points"], record["max_points"]) == (10, 10), record
    assert any("the kernel died in cell" in n and "again in a fresh kernel" in n for n in record["notes"])


def test_recursion_memory_flood_and_a_swarm_of_processes_each_get_a_line_and_cost_nothing(attacked):
    record = attacked["records"]["faults.ipynb"]
    assert (record["points"], record["max_points"]) == (10, 10), record
    notes = " | ".join(record["notes"])
    assert "RecursionError in cell" in notes
    assert "MemoryError in cell" in notes
    assert "printed more than" in notes
    assert "BlockingIOError in cell" in notes or "OSError in cell" in notes or "PermissionError in cell" in notes


def test_an_answer_that_ignores_sigint_costs_only_its_own_task(attacked):
    record = attacked["records"]["sigint.ipynb"]
    tasks = _tasks(record)
    assert tasks["01.attention"]["status"] == "timed out", tasks["01.attention"]
    assert "ignored the interrupt" in tasks["01.attention"]["feedback"]
    assert all(tasks[t]["status"] == "passed" for t in ("01.softmax", "01.score_std", "01.masked_attention"))
    assert record["points"] == 7


@pytest.mark.parametrize("name, why", [("dev_zero.ipynb", "symbolic link"), ("link_to_classmate.ipynb", "symbolic link"),
                                       ("fifo.ipynb", "not a regular file"), ("big.ipynb", "more than")])
def test_inputs_that_are_not_plain_small_notebooks_are_refused_before_anything_runs(attacked, name, why):
    record = attacked["records"][name]
    assert record["status"] == "not graded" and record["points"] == 0
    assert why in record["notes"][0]


def test_the_lesson_is_the_courses_not_the_metadatas(attacked):
    record = attacked["records"]["wrong_meta.ipynb"]
    assert record["lesson"] == "01" and record["max_points"] == 10
    assert any("metadata names lesson '02'" in n for n in record["notes"])


def test_the_csv_survives_forged_lines(attacked):
    rows = list(csv.DictReader(attacked["reports"]["grades.csv"].decode().splitlines()))
    assert len(rows) == 14
    assert {r["submission"].split("/")[-1]: r["points"] for r in rows}["forge.ipynb"] == "0"


def test_the_sandbox_in_force_is_the_strongest_this_machine_offers(attacked):
    confine = attacked["confine"]
    if SANDBOX != "auto":
        pytest.skip(f"the weaker sandbox was chosen (CROSSMODAL_GRADER_SANDBOX={SANDBOX})")
    if shutil.which("bwrap") is None:
        pytest.skip(f"bubblewrap is not installed: only {confine.describe()}")
    assert confine.kind == BUBBLEWRAP, confine.describe()
